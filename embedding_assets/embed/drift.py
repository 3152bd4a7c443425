"""Embedding drift: how far a batch's embedding centroid moved from the reference batches'."""

from __future__ import annotations

import numpy as np
import polars as pl

from embedding_assets.refine.quality import centroid_distance


def centroid_drift(current: pl.DataFrame, reference: pl.DataFrame) -> dict[str, float]:
    """Per source (the chunk id's prefix): cosine distance between this batch's embedding centroid
    and the reference batches'. Sources with no reference yet are left out."""
    out: dict[str, float] = {}
    if current.height == 0 or reference.height == 0:
        return out

    def by_source(frame: pl.DataFrame) -> dict[str, np.ndarray]:
        tagged = frame.with_columns(pl.col("chunk_id").str.split(":").list.first().alias("_source"))
        return {
            str(s): np.asarray(g["vector"].to_list(), dtype=np.float32)
            for (s,), g in tagged.group_by("_source")
        }

    ref = by_source(reference)
    for source, vectors in sorted(by_source(current).items()):
        if source in ref and len(vectors) and len(ref[source]):
            out[source] = round(float(centroid_distance(ref[source], vectors)), 6)
    return out
