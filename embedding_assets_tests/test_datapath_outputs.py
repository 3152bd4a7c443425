"""The data path's outputs, pinned: the silver, quarantine, gold/documents and gold/chunks content
of every sample batch and of the malformed-rows fixture, as content hashes of every column.

A faster path (vectorised parsing, bounded chunks, another deduplication) must leave every one
of these unchanged. A change that means to alter an output updates its hash here, in the same
commit, and says why."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from embedding_assets.contracts.load import load_contracts
from embedding_assets.contracts.model import Contract
from embedding_assets.core.hashing import frame_hash
from embedding_assets.core.lake import Lake
from embedding_assets.embed.embedder import bundled_tokenizer
from embedding_assets.gold.assemble import assemble
from embedding_assets.gold.chunking import Chunker, ChunkerSettings, chunk_documents
from embedding_assets.ingest import bronze as bronze_lib
from embedding_assets.ingest.landing import read_raw_batch
from embedding_assets.refine.silver import bronze_to_silver
from embedding_assets_tests.conftest import SAMPLE
from embedding_assets_tests.malformed import write_fixture

PINNED = {
    "gold/chunks/2026-11-01": "7eb88aa682394a5215a235a30cfcc54d057040ed499f502459cec5081a5546b1",
    "gold/chunks/2026-11-08": "0deea21fb87f0067aec5143b09310dd8e53a4f7c5c523138d6c4e8c60355ea06",
    "gold/chunks/2026-11-15": "62cfebf6f13ab09e8f7e2d22420ba49200ddda90bd040329816fc3e5e2fa46c4",
    "gold/documents/2026-11-01": "bf3b4480c0e28ec429b25bc16e44e056d0974d7b7ecca833b9f39d34e0ebcbd2",
    "gold/documents/2026-11-08": "6cee45241da952a06e2460b595c63bf847b0383bc6622edaa95a11da7afa3a36",
    "gold/documents/2026-11-15": "92fb2ba1fbab9dee7755430d288f91886f223824574933c0fdc14cade156ecd0",
    "quarantine/catalog/2026-11-01": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/catalog/2026-11-08": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/guides/2026-11-01": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/guides/2026-11-08": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/helpdesk/2026-11-01": "3533ec48c8c43e230a3d4feef7e9923106e66d0a6165d9ab9046db722e9ea4c5",
    "quarantine/helpdesk/2026-11-08": "0a485c28af181b1777c7f97794c59c93a40f47ede467ff57e7aad6d0bd5bc44b",
    "quarantine/kb/2026-11-01": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/kb/2026-11-08": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/manuals/2026-11-01": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/manuals/2026-11-08": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/storefront/2026-11-01": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/storefront/2026-11-08": "3575cdaa175dc8cb7e539325465bb875f3a9437341be71a3d7a79b52e1f2e464",
    "quarantine/tickets/2026-11-15": "9dacd448b302c8035d6f422e1f11ce2396ca790469735a315d2c960671b66f0e",
    "silver/catalog/2026-11-01": "4f99f04b70655f9d733fbf7ef8ba005ac99db1cdadd4058bfe775de737b5f394",
    "silver/catalog/2026-11-08": "c802275578791901595df42f84270fba9feb65ec7c162834aecefb3f640128e2",
    "silver/guides/2026-11-01": "f54f5430447b91af78140592bb96e349e0a7127ac74837d389f17b81a5c16da7",
    "silver/guides/2026-11-08": "0571be9f5ff82d1563db08d7cd9ecfdcc2b2ce6893f42ebbdce9e054d62975f6",
    "silver/helpdesk/2026-11-01": "e5ab5f2d2000d3b3de41d9133ede417f32e0cb6da1a42c23921fe90f460e2af2",
    "silver/helpdesk/2026-11-08": "27da1f8e2a60bb428b87b617d0babf8b5e0f60ae84068a174729eb31f67aff4c",
    "silver/kb/2026-11-01": "ce6e9f2d59e4fe6675277505e1e967054e1a307c62c527c9978b8666f41c7147",
    "silver/kb/2026-11-08": "8f58382b833dd883f5cb7836270dffd14ad77762378657834ae3fa777500bb13",
    "silver/manuals/2026-11-01": "d7a1eb262ac1c00114d418393eddf5d1eca677c0f945e314f795764aad401ab8",
    "silver/manuals/2026-11-08": "d43dd732059791feba4760d26e6334a5660f574b03effc03c2db453012be46e9",
    "silver/storefront/2026-11-01": "c7db46d96b44074f77eb45ddcc0304a82e137eb42b6c6d28166c7872d794e586",
    "silver/storefront/2026-11-08": "a20d9049ed76d40c6b9a49e515a981c41d479d8ae161f2bd23f79e84a816de59",
    "silver/tickets/2026-11-15": "1d4dccf4dc107e9fc73ce482df7f0b57442b50d1f198edcf47ed4e6e474a94ba",
}


def content(frame: pl.DataFrame) -> str:
    """Every column and row, independent of row order (a list as its items joined)."""
    frame = frame.with_columns(
        pl.col(c).list.join("\x1d") for c, dtype in frame.schema.items() if isinstance(dtype, pl.List)
    )
    order = [c for c in ("doc_id", "chunk_id", "_file", "_line") if c in frame.columns]
    return frame_hash(frame, frame.columns, sort_by=order)


def batch_outputs(contracts: dict[str, Contract], landing: Path, batch: str, lake: Lake) -> dict[str, str]:
    silvers, out = {}, {}
    for source in sorted(contracts):
        folder = landing / source / batch
        contract = contracts[source]
        landed = read_raw_batch(contract, folder if folder.is_dir() else landing / "missing")
        if not folder.is_dir():
            silvers[source] = bronze_to_silver(contract, landed.records, batch).silver
            continue
        rows = bronze_lib.new_delivery(
            landed.records, source=source, batch=batch, fmt=contract.format, delivery=landed.content_hash,
            existing=pl.DataFrame(schema=bronze_lib.BRONZE_SCHEMA), now=datetime(2026, 12, 1, tzinfo=UTC),
        )  # fmt: skip
        assert rows is not None
        result = bronze_to_silver(contract, bronze_lib.as_raw_records(rows), batch)
        assert result.accounted
        out[f"silver/{source}/{batch}"] = content(result.silver)
        out[f"quarantine/{source}/{batch}"] = content(result.rejected)
        lake.overwrite_batch(f"silver/{source}", result.silver, batch)  # entities read earlier batches
        silvers[source] = result.silver
    documents = assemble(lake, contracts, silvers, batch).documents
    sectioned = frozenset(s for s, c in contracts.items() if c.format == "markdown")
    chunker = Chunker(bundled_tokenizer(), ChunkerSettings(), "pinned", sectioned)
    chunks = chunk_documents(documents, chunker, model="m")
    out[f"gold/documents/{batch}"] = content(documents)
    out[f"gold/chunks/{batch}"] = content(chunks)
    return out


def all_outputs(tmp_path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    sample = load_contracts(SAMPLE / "contracts")
    for batch in ("2026-11-01", "2026-11-08"):
        out |= batch_outputs(sample, SAMPLE / "landing", batch, Lake(str(tmp_path / "lake")))
    write_fixture(tmp_path)
    fixture = load_contracts(tmp_path / "contracts")
    out |= batch_outputs(fixture, tmp_path / "landing", "2026-11-15", Lake(str(tmp_path / "fixture-lake")))
    return out


def test_the_data_path_outputs_are_unchanged(tmp_path: Path) -> None:
    got = all_outputs(tmp_path)
    changed = {k: v for k, v in got.items() if PINNED.get(k) != v}
    assert not changed, (
        "outputs changed (update PINNED only for a change meant to alter them):\n"
        + "\n".join(f"    {k!r}: {v!r}," for k, v in sorted(changed.items()))
    )
