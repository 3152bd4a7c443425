"""Asset keys and the partitions they share.

Keys are one part, layer first (``bronze_helpdesk``), so that every box in the lineage graph reads
differently: the graph labels a node with the last part of its key. Lake tables keep their paths
(``bronze/helpdesk``)."""

from __future__ import annotations

import dagster as dg

BATCHES = "batches"
batches = dg.DynamicPartitionsDefinition(name=BATCHES)
"""One partition per ingestion epoch: the name of a landing batch folder."""

GOLD_DOCUMENTS = dg.AssetKey("gold_documents")
GOLD_CHUNKS = dg.AssetKey("gold_chunks")
EMBEDDINGS = dg.AssetKey("embeddings")
VECTOR_INDEX = dg.AssetKey("vector_index")


def layer_key(layer: str, source: str) -> dg.AssetKey:
    """``landing``, ``bronze``, ``silver`` or ``quarantine`` of one source."""
    return dg.AssetKey(f"{layer}_{source}")
