import sys

from embedding_assets.cli import main

sys.exit(main())
