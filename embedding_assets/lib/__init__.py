"""Pure, typed building blocks with no Dagster in them."""
