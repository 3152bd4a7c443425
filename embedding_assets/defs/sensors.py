from collections.abc import Sequence

import dagster as dg

from embedding_assets.defs.orchestration import plan_sync, reap_orphaned_runs
from embedding_assets.defs.partitions import batches
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.lib.planner import Node


def build_landing_sensor(nodes: Sequence[Node]) -> dg.SensorDefinition:
    keys = [dg.AssetKey.from_user_string(n.key) for n in nodes]

    @dg.sensor(
        name="landing_sensor",
        target=dg.AssetSelection.assets(*keys),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New batch folders become partitions; changed content re-runs only what it changed.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
        for run_id in reap_orphaned_runs(context.instance):
            context.log.warning(
                f"run {run_id} lost its process (killed?): marked failed; its partition re-runs"
            )
        plan = plan_sync(context.instance, nodes, pipeline)
        for line in plan.scan.rejected:
            context.log.warning(line)
        for batch, blocked in plan.blocked.items():
            context.log.warning(f"batch {batch}: blocked by a failed blocking check at {', '.join(blocked)}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    partition_key=batch,
                    asset_selection=[dg.AssetKey.from_user_string(k) for k in run_keys],
                    tags={"ea/trigger": "landing_sensor"},
                )
                for batch, run_keys in plan.runs.items()
            ],
            dynamic_partitions_requests=(
                [batches.build_add_request(plan.new_partitions)] if plan.new_partitions else []
            ),
            asset_events=plan.observations,
        )

    return landing_sensor
