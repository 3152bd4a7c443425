import dagster as dg

BATCHES = "batches"
batches = dg.DynamicPartitionsDefinition(name=BATCHES)
"""One partition per ingestion epoch: the name of a landing batch folder."""
