"""The HTTP search API (``embedding-assets serve``) on FastAPI: the warm searcher of
:mod:`embedding_assets.index.service` behind ``GET /search``, ``GET /healthz`` and the OpenAPI
page at ``/docs``.

``/search`` answers exactly what ``embedding-assets search --json`` prints for one query. A bad
parameter is a 422 whose ``detail`` says what is wrong; an empty index is a 503 that says what
to run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from embedding_assets.config import Settings
from embedding_assets.index.searcher import MAX_K, IndexEmpty, SearchRefused, result_json
from embedding_assets.index.service import WarmSearch


def create_app(settings: Settings, refresh_s: float = 1.0) -> FastAPI:
    warm = WarmSearch(settings, refresh_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load the model now. Nothing synced yet: /healthz says so, the first search after a sync loads it.
        with suppress(IndexEmpty):
            warm.searcher().embedder.encode(["warm up"])  # type: ignore[union-attr]
        yield

    app = FastAPI(
        title="embedding-assets search",
        summary="Vector, full-text and hybrid search over the serving model's LanceDB index.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _serve_docs_offline(app)

    @app.exception_handler(SearchRefused)
    async def refused(_: Any, exc: SearchRefused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503 if isinstance(exc, IndexEmpty) else 422)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """The serving model and the index version searches read now."""
        return warm.health()

    @app.get("/search")
    def search(
        q: Annotated[str, Query(min_length=1, max_length=4096, pattern=r"\S", description="the query")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description=f"hits, 1 to {MAX_K}")] = 10,
        mode: Annotated[Literal["vector", "fts", "hybrid"], Query()] = "hybrid",
        source: Annotated[str | None, Query(description="only this source's chunks")] = None,
    ) -> dict[str, Any]:
        """The top ``k`` chunks for ``q``: the same JSON as `embedding-assets search --json`."""
        return result_json(warm.search(q, k, mode, source))

    return app


def _serve_docs_offline(app: FastAPI) -> None:
    """/docs from the swagger-ui assets installed with the package (swagger-ui-bundle), so the
    page works on a machine with no internet, where FastAPI's default page loads them from a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/_swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url="/_swagger/swagger-ui-bundle.js",
            swagger_css_url="/_swagger/swagger-ui.css",
            swagger_favicon_url="/_swagger/favicon-32x32.png",
        )
