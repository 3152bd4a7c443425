from embedding_assets.cli import run

run()
