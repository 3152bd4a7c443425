"""Asset keys and the partitions they share.

Keys are one part, layer first (``bronze_helpdesk``), so that every box in the lineage graph reads
differently: the graph labels a node with the last part of its key. Lake tables keep their paths
(``bronze/helpdesk``).

Three partition shapes: a batch (``2026-11-01``: landing to gold/documents), a batch and a model
(``2026-11-01|all-MiniLM-L6-v2``: chunks, embeddings and the index, built for the serving model
and for every candidate as a shadow), and a model (its whole index: the canary evaluation)."""

from __future__ import annotations

import dagster as dg

BATCHES, MODELS = "batches", "models"
batches = dg.DynamicPartitionsDefinition(name=BATCHES)
"""One partition per ingestion epoch: the name of a landing batch folder."""
models = dg.DynamicPartitionsDefinition(name=MODELS)
"""One partition per registered embedding model (its registry name)."""
BATCH, MODEL = "batch", "model"
batch_models = dg.MultiPartitionsDefinition({BATCH: batches, MODEL: models})
"""A batch's chunks, vectors and index rows for one model; the key reads ``<batch>|<model>``."""

GOLD_DOCUMENTS = dg.AssetKey("gold_documents")
GOLD_CHUNKS = dg.AssetKey("gold_chunks")
EMBEDDINGS = dg.AssetKey("embeddings")
VECTOR_INDEX = dg.AssetKey("vector_index")
SEARCH_INDEX = dg.AssetKey("search_index")
MODEL_KEYS = (GOLD_CHUNKS, EMBEDDINGS, VECTOR_INDEX)  # partitioned by batch and model
BY_BATCH = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=BATCH)
BY_MODEL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL)


def layer_key(layer: str, source: str) -> dg.AssetKey:
    """``landing``, ``bronze``, ``silver`` or ``quarantine`` of one source."""
    return dg.AssetKey(f"{layer}_{source}")


def batch_model(batch: str, model: str) -> str:
    """The partition key of a batch and a model."""
    return str(dg.MultiPartitionKey({BATCH: batch, MODEL: model}))


def split_key(partition: str) -> tuple[str, str]:
    """(batch, model) of a ``<batch>|<model>`` partition key."""
    batch, _, model = partition.partition("|")
    return batch, model


SHAPE_TAG = "ea/partitions"  # on every asset: its partitions' shape (batch, batch_model or model)


def shape_tag(shape: str) -> dict[str, str]:
    """Tags that let a selection pick one shape: ``--select 'tag:ea/partitions=batch'``."""
    return {SHAPE_TAG: shape}
