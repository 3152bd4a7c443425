"""``embedding-assets serve``: the search API over HTTP, with the model loaded once."""

from __future__ import annotations

import argparse
from typing import Any

from embedding_assets.config import Settings
from embedding_assets.core.services import check_settings_storage


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from embedding_assets.api import create_app

    settings = check_settings_storage(Settings.from_env())
    app = create_app(settings, refresh_s=args.refresh)
    print(f"serving search on http://{args.host}:{args.port} (API page: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("serve", help="the search API over HTTP: GET /search, /healthz, /docs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--refresh",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often a request checks for a newer index version or serving model (default 1)",
    )
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)
