"""Dagster wiring only: partitions, assets per layer, checks, sensors, resources."""

import warnings

import dagster as dg

# Partitioned asset checks and partitioned observable sources are preview/beta features we rely
# on deliberately; their warnings would otherwise repeat on every code-location load.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)
