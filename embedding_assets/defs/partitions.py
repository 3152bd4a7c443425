import dagster as dg

batches = dg.DynamicPartitionsDefinition(name="batches")
"""One partition per ingestion epoch: the name of a landing batch folder."""
