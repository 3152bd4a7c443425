"""embedding_assets: landing files to fresh, trustworthy embeddings as Dagster assets."""

__version__ = "0.1.0"
