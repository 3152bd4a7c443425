"""Operations on a real lake and a real Dagster instance: the scheduled lake maintenance job,
alerts posted to a real local HTTP server, and the landed -> searchable lag and freshness SLA."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._core.events import DagsterEventType

from embedding_assets.core.alerts import Alert, deliver
from embedding_assets.defs.alerts import check_failure_alerts, new_evaluations, run_failure_alerts
from embedding_assets.defs.factory import build_defs
from embedding_assets.defs.freshness import FRESHNESS_CHECK, LAG, freshness_sensor, late_evaluations
from embedding_assets.defs.maintenance import MAINTENANCE_JOB, maintenance_schedule
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import sync
from embedding_assets.embed.embedder import HashingEmbedder
from embedding_assets.index.freshness import Landed, overdue
from embedding_assets_tests.conftest import (
    CORE_SOURCES,
    HASHING,
    index_content,
    lake_snapshot,
    make_pipeline,
    materializations,
    open_index,
)

SAMPLE_SOURCES = CORE_SOURCES  # the whole-sync tests here need no HTML or PDF

pytestmark = pytest.mark.slow
B1, B2 = "2026-11-01", "2026-11-08"


def _quiet(_: str) -> None:
    pass


def _search(root: Path, query: str) -> list[str]:
    index = open_index(str(root / "lancedb"), HASHING, 384)
    vector = HashingEmbedder(384).encode([query])[0]
    return [h["chunk_id"] for h in index.reader.search(query, vector, k=5, mode="hybrid")]


def _same_lake(root: Path, before: dict[str, pl.DataFrame]) -> bool:
    now = lake_snapshot(root)
    return now.keys() == before.keys() and all(now[t].equals(f) for t, f in before.items())


def _maintain(pipeline: PipelineResource, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = build_defs(Path(pipeline.contracts_dir or ""), pipeline).get_job_def(MAINTENANCE_JOB)
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    return result


def _figures(result: dg.ExecuteInProcessResult, op: str) -> dict[str, Any]:
    for event in result.all_events:
        if event.step_key == op and event.event_type_value == "STEP_OUTPUT":
            return {k: v.value for k, v in event.step_output_data.metadata.items()}
    raise AssertionError(f"no output of {op}")


def test_maintenance_compacts_and_vacuums_without_changing_rows_or_results(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    for batch in ("2026-11-15", "2026-11-22"):  # more batches: more small files and fragments
        shutil.copytree(root / "landing" / "helpdesk" / B2, root / "landing" / "helpdesk" / batch)
    assert sync(instance, pipeline, echo=_quiet).ok
    lake, index = lake_snapshot(root), index_content(root)
    hits = _search(root, "thermostat schedule")
    reports = str(root / "lake" / "quality" / "reports")  # one small file per batch and source
    first = pl.read_delta(reports, version=1)

    kept = _figures(_maintain(pipeline, instance), "maintain_lake")
    assert kept["files_after"] < kept["files_before"] and kept["retention_h"] == 48.0
    assert _same_lake(root, lake)
    assert index_content(root).equals(index) and _search(root, "thermostat schedule") == hits
    assert pl.read_delta(reports, version=1).equals(first)  # time travel within the retention works
    figures = _figures(_maintain(pipeline, instance), "maintain_index")
    assert figures["fragments_after"] <= figures["fragments_before"] and figures["tables"] == 1

    # A retention of 0 h (below any real rollback window) shows what VACUUM deletes: the files
    # only older versions needed. The current version keeps every row.
    bare = make_pipeline(root, model_retention_h=0.0)
    figures = _figures(_maintain(bare, instance), "maintain_index")
    assert figures["versions_removed"] > 0
    with pytest.raises(Exception, match=r"(?i)not found|no such file|does not exist"):
        pl.read_delta(reports, version=1)
    assert _same_lake(root, lake)
    assert index_content(root).equals(index) and _search(root, "thermostat schedule") == hits
    assert sync(instance, pipeline, echo=_quiet).runs == 0  # maintenance is not a change to redo


def test_the_maintenance_schedule_waits_for_runs_in_flight(instance: dg.DagsterInstance) -> None:
    schedule = maintenance_schedule("0 3 * * *")
    assert schedule.cron_schedule == "0 3 * * *"
    with dg.build_schedule_context(instance=instance) as context:
        requests = schedule.evaluate_tick(context).run_requests
        assert requests is not None and len(requests) == 1
    run = instance.add_run(
        dg.DagsterRun(job_name="__ASSET_JOB", run_id="a" * 32, status=dg.DagsterRunStatus.STARTED)
    )
    with dg.build_schedule_context(instance=instance) as context:
        data = schedule.evaluate_tick(context)
    assert not data.run_requests and run.run_id[:8] in (data.skip_message or "")


class Hook:
    """A real HTTP server on loopback that records each JSON body POSTed to it; it answers 503 to
    the first ``fail_first`` requests (a hook that is briefly down)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answered: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 503 if len(hook.answered) < fail_first else 204
                hook.answered.append(status)
                if status == 204:
                    hook.bodies.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["kind"] == kind]


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    server = Hook(fail_first=1)
    monkeypatch.setenv("EA_ALERT_WEBHOOK", server.url)
    yield server
    server.server.shutdown()


def _check_tick(instance: dg.DagsterInstance, cursor: str | None, pipeline: PipelineResource) -> str:
    defs = build_defs(Path(pipeline.contracts_dir or ""), pipeline)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    check_failure_alerts(context)
    return str(context.cursor)


def _failed_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return [
        r.dagster_run for r in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    ]


def test_failed_runs_and_blocking_checks_post_json_alerts_once(
    pipeline: PipelineResource, instance: dg.DagsterInstance, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor = _check_tick(instance, None, pipeline)  # the sensor starts from now
    monkeypatch.setattr("embedding_assets.defs.silver.silver_failures", lambda frame: ["doc_id: not unique"])
    assert not sync(instance, pipeline, echo=_quiet).ok
    cursor = _check_tick(instance, cursor, pipeline)
    checks = hook.of("check_failure")
    assert checks and all(b["schema"] == "embedding_assets.alert/1" for b in checks)
    assert {b["partition"] for b in checks} == {B1, B2}
    assert all(b["check"].startswith("silver_") and "not unique" in b["detail"] for b in checks)
    assert hook.answered[0] == 503  # the first POST was refused and retried with backoff
    assert _check_tick(instance, cursor, pipeline) and len(hook.of("check_failure")) == len(checks)  # once

    failed = _failed_runs(instance)
    assert failed, "a blocked batch's run fails"
    event = instance.all_logs(failed[0].run_id, of_type=DagsterEventType.RUN_FAILURE)[0].dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=failed[0],
    ).for_run_failure()
    run_failure_alerts(context)
    [posted] = hook.of("run_failure")
    assert posted["run_id"] == failed[0].run_id and posted["partition"] in (B1, B2)
    assert posted["job"] == "__ASSET_JOB" and "failed" in posted["title"]

    monkeypatch.undo()
    monkeypatch.setenv("EA_ALERT_WEBHOOK", hook.url)
    for contract in Path(pipeline.contracts_dir or "").glob("*.yaml"):
        contract.open("a").write("# reviewed\n")
    assert sync(instance, pipeline, echo=_quiet).ok
    state = json.loads(_check_tick(instance, cursor, pipeline))
    assert state["failing"] == []  # passing again: the next failure alerts again


def test_without_a_webhook_alerts_are_logged_and_a_dead_hook_is_a_warning() -> None:
    logged: list[str] = []
    alert = Alert("run_failure", "run 1234abcd of __ASSET_JOB failed", run_id="1234abcd")
    assert not deliver(alert, "", logged.append, logged.append)
    assert logged == ["ALERT run_failure: run 1234abcd of __ASSET_JOB failed (run=1234abcd)"]
    assert not deliver(alert, "http://127.0.0.1:9/alerts", logged.append, logged.append)
    assert "EA_ALERT_WEBHOOK=http://127.0.0.1:9/alerts did not take the alert" in logged[-1]


def test_overdue_batches_are_those_unsearchable_since_landing_past_their_sla() -> None:
    landed = {
        "a": Landed("a", 1000.0, 600.0),
        "b": Landed("b", 1000.0, 600.0),
        "c": Landed("c", 1500.0, 600.0),
    }
    late = overdue(landed, {"a": 1200.0, "b": 900.0, "c": None}, now=1700.0)
    assert [(o.batch, o.waited_s) for o in late] == [("b", 700.0)]  # b's index predates its landing
    assert "not searchable yet (SLA 10 min)" in late[0].line()
    assert Landed("a", 1000.0, 600.0).lag_s(1300.0, since=1100.0) == 200.0


def test_each_batch_records_its_lag_and_a_late_batch_fails_the_freshness_check(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance, hook: Hook
) -> None:
    cursor = _check_tick(instance, None, pipeline)
    assert sync(instance, pipeline, echo=_quiet).ok
    for batch in (B1, B2):
        [mat] = materializations(instance, "vector_index", batch)
        assert isinstance(mat.metadata[LAG], dg.FloatMetadataValue)  # numeric: the UI plots it
        assert 0 <= float(mat.metadata[LAG].value) < 600  # type: ignore[arg-type]
    check = dg.AssetCheckKey(dg.AssetKey("vector_index"), FRESHNESS_CHECK)
    evaluations = [e for _, _, e in new_evaluations(instance, check, 0)]
    assert {e.partition for e in evaluations} == {f"{B1}|{HASHING}", f"{B2}|{HASHING}"}
    assert all(e.passed for e in evaluations)

    late = "2026-11-15"
    shutil.copytree(root / "landing" / "guides" / B2, root / "landing" / "guides" / late)
    context = dg.build_sensor_context(instance=instance, resources={"pipeline": pipeline})
    freshness_sensor(context)  # landed just now: within the SLA
    assert json.loads(str(context.cursor)) == []
    found, now_late = late_evaluations(instance, pipeline, set(), time.time() + 11 * 60)
    assert [e.partition for e in found] == [f"{late}|{HASHING}"] and now_late == {f"{late}|{HASHING}"}
    assert "not searchable yet (SLA 10 min)" in (found[0].description or "")
    instance.report_runless_asset_event(found[0])
    _check_tick(instance, cursor, pipeline)
    [alert] = hook.of("freshness")
    assert alert["partition"] == f"{late}|{HASHING}" and alert["check"] == FRESHNESS_CHECK

    guides = root / "contracts" / "guides.yaml"  # the SLA is the contract's
    guides.write_text(guides.read_text().replace("owner:", "freshness_sla_minutes: 30\nowner:"))
    assert late_evaluations(instance, pipeline, set(), time.time() + 11 * 60)[0] == []
    assert sync(instance, pipeline, echo=_quiet).ok
    assert late_evaluations(instance, pipeline, set(), time.time() + 31 * 60)[0] == []  # searchable now
