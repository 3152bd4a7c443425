"""The Dagster entry point: one Definitions object, assembled from defs/, no logic here."""

import dagster as dg

from embedding_assets.config import Settings
from embedding_assets.defs.factory import build_defs


@dg.definitions
def defs() -> dg.Definitions:
    # Contracts decide which per-source assets exist, so they are read when the code location
    # loads (and validated then: a broken contract names its file and field).
    return build_defs(Settings.from_env().contracts_dir)
