"""What the Dagster UI shows, read through the webserver's GraphQL API of a real ``dagster dev``
(webserver + daemon) on our code location: the asset graph, landing partitions, staleness after an
edit, runs launched from the UI that rebuild only what changed, and the checks' plot figures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from embedding_assets.defs.factory import build_defs, materialisable_keys
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import sync
from embedding_assets_tests.conftest import (
    CORE_SOURCES,
    HASHING,
    REPO,
    copy_sample,
    index_snapshot,
    make_pipeline,
)

# Both tests share one synced sample and one `dagster dev` (on one worker, in file order).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]
B1, B2 = "2026-11-01", "2026-11-08"
DAGSTER = str(Path(sys.executable).parent / "dagster")
STALE_QUERY = """query($path: [String!]!, $partitions: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { staleStatusByPartition(partitions: $partitions) } }
}"""
CHECK_QUERY = """query($path: [String!]!, $check: String!, $partition: String) {
  assetCheckExecutions(assetKey: {path: $path}, checkName: $check, partition: $partition, limit: 1) {
    evaluation { metadataEntries { __typename label ... on FloatMetadataEntry { floatValue } } }
  }
}"""
MATERIALISATIONS = """query($path: [String!]!, $partitions: [String!]!) {
  assetOrError(assetKey: {path: $path}) { ... on Asset { assetMaterializations(partitions: $partitions) {
    metadataEntries { __typename label ... on FloatMetadataEntry { floatValue } } } } }
}"""
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""


@dataclass
class Ui:
    url: str
    log: Path
    location: str
    repository: str

    def query(self, text: str, **variables: Any) -> Any:
        body = json.dumps({"query": text, "variables": variables}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
        assert "errors" not in answer, answer["errors"]
        return answer["data"]

    def stale(self, asset: str, partitions: list[str]) -> dict[str, str]:
        node = self.query(STALE_QUERY, path=[asset], partitions=partitions)["assetNodeOrError"]
        return dict(zip(partitions, node["staleStatusByPartition"], strict=True))

    def launch(self, assets: list[str], batch: str) -> str:
        """What the UI's Materialize does for a selection of assets and one partition."""
        params = {
            "selector": {
                "repositoryLocationName": self.location,
                "repositoryName": self.repository,
                "pipelineName": "__ASSET_JOB",
                "assetSelection": [{"path": [a]} for a in assets],
            },
            "mode": "default",
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": batch}]},
        }
        launched = self.query(LAUNCH, params=params)["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return str(launched["run"]["runId"])

    def wait(self, run_id: str, limit_s: float = 240) -> str:
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            status = self.query(
                "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", id=run_id
            )
            state = status["runOrError"]["status"]
            if state in ("SUCCESS", "FAILURE", "CANCELED"):
                return str(state)
            time.sleep(1)
        raise TimeoutError(f"run {run_id} still going after {limit_s} s; see {self.log}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ui, dg.DagsterInstance, Path]]:
    tmp_path = tmp_path_factory.mktemp("ui")
    root = copy_sample(tmp_path / "data", CORE_SOURCES)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "embedding_assets" / "instance.yaml", home / "dagster.yaml")
    # The server's settings equal the tests' pipeline; an hour's sensor interval keeps the daemon's
    # sensor to its first tick, so that this test decides when an edit is observed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EA_")}
    env.update(
        EA_DATA_DIR=str(root), EA_EMBEDDER="hashing", EA_LANDING_SETTLE_S="0", EA_SENSOR_INTERVAL_S="3600",
        DAGSTER_HOME=str(home), HF_HUB_OFFLINE="1",
    )  # fmt: skip
    with dg.DagsterInstance.from_config(str(home)) as instance:
        summary = sync(instance, make_pipeline(root, device=None), echo=lambda _: None)
        assert summary.ok, summary.render()
        port, log = _free_port(), tmp_path / "dagster-dev.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [DAGSTER, "dev", "-m", "embedding_assets.definitions", "-p", str(port)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                yield _connect(f"http://127.0.0.1:{port}", log, server), instance, root
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)


def _connect(url: str, log: Path, server: subprocess.Popen[bytes]) -> Ui:
    started = time.monotonic()
    while time.monotonic() - started < 180:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            ui = Ui(url, log, "", "")
            found = ui.query(
                "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
            )
            [repo] = found["repositoriesOrError"]["nodes"]
            return Ui(url, log, repo["location"]["name"], repo["name"])
        except (urllib.error.URLError, ConnectionError, KeyError, ValueError):
            time.sleep(1)
    raise TimeoutError(f"dagster dev did not answer; see {log.read_text()[-3000:]}")


def _observe_edit(root: Path, instance: dg.DagsterInstance, marker: str) -> list[dg.RunRequest]:
    """Edit one help-desk ticket of B2 and let the landing sensor look once, recording what it
    observed as the daemon would. Returns its run requests (not launched)."""
    landing = root / "landing" / "helpdesk" / B2
    path = next(p for p in sorted(landing.iterdir()) if p.suffix == ".jsonl")
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row["body"] = f"{row['body']} {marker}"
    row["updated_at" if "updated_at" in row else "modified"] = "2026-11-30T00:00:00Z"
    path.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    pipeline = make_pipeline(root, device=None)
    defs = build_defs(root / "contracts", pipeline)
    context = dg.build_sensor_context(instance=instance, resources={"pipeline": pipeline}, definitions=defs)
    result = defs.resolve_sensor_def("landing_sensor")(context)
    assert isinstance(result, dg.SensorResult)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return list(result.run_requests or [])


SHAPES = {"batch": [B1, B2], "batch_model": [f"{B1}|{HASHING}", f"{B2}|{HASHING}"], "model": [HASHING]}


def _materialisable(root: Path) -> dict[str, list[str]]:
    """shape -> the assets of that partition shape (a launch selects one shape)."""
    defs = build_defs(root / "contracts", PipelineResource())
    assets = list(defs.assets or [])
    return {shape: [k.to_user_string() for k in materialisable_keys(assets, shape)] for shape in SHAPES}  # type: ignore[arg-type]


def _memo(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    out = {}
    for event in events:
        m = event.asset_materialization
        assert m is not None
        out[m.asset_key.to_user_string()] = str(m.metadata["memo"].value)
    return out


def _unsynced(ui: Ui, shapes: dict[str, list[str]]) -> dict[str, list[str]]:
    """partition -> assets not FRESH: what "Materialize unsynced" selects, per partition."""
    out: dict[str, list[str]] = {}
    for shape, assets in shapes.items():
        for asset in assets:
            for partition, status in ui.stale(asset, SHAPES[shape]).items():
                if status != "FRESH":
                    out.setdefault(partition, []).append(asset)
    return out


def _a_shadow_build_is_a_backfill_the_daemon_runs(
    server: Ui, instance: dg.DagsterInstance, root: Path
) -> None:
    """`model add` with the daemon up submits the candidate's partitions as a backfill; the UI's
    Backfills page (the same GraphQL query) lists it, and the daemon builds it to the end."""
    from embedding_assets.defs.lifecycle import add_model
    from embedding_assets.defs.models import list_models

    pipeline = make_pipeline(root, device=None)
    added = add_model(instance, pipeline, "other", echo=lambda _: None)
    assert added.build is not None and added.build.by_daemon
    query = "{ partitionBackfillsOrError { ... on PartitionBackfills { results { id status title numPartitions } } } }"
    started, status = time.monotonic(), ""
    while time.monotonic() - started < 240 and status not in (
        "COMPLETED_SUCCESS",
        "COMPLETED_FAILED",
        "FAILED",
    ):
        time.sleep(2)
        [backfill] = [
            b
            for b in server.query(query)["partitionBackfillsOrError"]["results"]
            if b["id"] == added.build.backfill_id
        ]
        status = backfill["status"]
    assert status == "COMPLETED_SUCCESS" and backfill["title"] == "shadow build of hashing-other", backfill
    assert {r.name: r.complete for r in list_models(pipeline)} == {HASHING: True, "hashing-other": True}


def test_an_observed_edit_shows_unsynced_and_the_ui_rebuilds_only_what_changed(
    ui: tuple[Ui, dg.DagsterInstance, Path],
) -> None:
    server, instance, root = ui
    shapes = _materialisable(root)
    requests = _observe_edit(root, instance, "Zebracode one.")
    runs = [(r.dagster_run.tags.get("ea/reason"), r.dagster_run.status) for r in instance.get_run_records()]
    assert [r.partition_key for r in requests] == [B2], runs  # one run for the edited batch
    assert server.stale("bronze_helpdesk", [B1, B2]) == {B1: "FRESH", B2: "STALE"}

    # "Materialize unsynced", again and again until nothing is unsynced.
    rebuilt: set[tuple[str, str]] = set()
    for _ in range(sum(len(a) for a in shapes.values())):
        unsynced = _unsynced(server, shapes)
        if not unsynced:
            break
        for partition, selected in unsynced.items():
            run_id = server.launch(selected, partition)
            assert server.wait(run_id) == "SUCCESS", server.log.read_text()[-3000:]
            rebuilt |= {(a, partition) for a, memo in _memo(instance, run_id).items() if memo == "rebuilt"}
    assert not _unsynced(server, shapes)
    assert {p for _, p in rebuilt} <= {B2, f"{B2}|{HASHING}", HASHING}
    assert {("bronze_helpdesk", B2), ("silver_helpdesk", B2), ("gold_documents", B2),
            ("embeddings", f"{B2}|{HASHING}"), ("vector_index", f"{B2}|{HASHING}")} <= rebuilt  # fmt: skip
    assert index_snapshot(root)["text"].str.contains("Zebracode one", literal=True).any()

    # Materialize on the whole graph of the batch, shape by shape: what changed is rebuilt, the rest kept.
    _observe_edit(root, instance, "Zebracode two.")
    memo: dict[str, str] = {}
    for shape, partition in (("batch", B2), ("batch_model", f"{B2}|{HASHING}"), ("model", HASHING)):
        run_id = server.launch(shapes[shape], partition)
        assert server.wait(run_id) == "SUCCESS", server.log.read_text()[-3000:]
        memo |= _memo(instance, run_id)
    assert set(memo) == {a for assets in shapes.values() for a in assets}
    assert {a for a, m in memo.items() if m == "rebuilt"} >= {
        "bronze_helpdesk",
        "silver_helpdesk",
        "embeddings",
    }
    assert {a for a, m in memo.items() if m == "kept"} >= {
        "bronze_catalog",
        "silver_catalog",
        "bronze_guides",
    }
    assert not _unsynced(server, shapes)
    assert index_snapshot(root)["text"].str.contains("Zebracode two", literal=True).any()


def test_the_ui_shows_the_graph_landing_and_check_figures(ui: tuple[Ui, dg.DagsterInstance, Path]) -> None:
    server, instance, root = ui
    nodes = server.query("{ assetNodes { assetKey { path } } }")["assetNodes"]
    paths = [n["assetKey"]["path"] for n in nodes]
    labels = [p[-1] for p in paths]  # what a box in the graph reads
    assert len(labels) == len(set(labels)), labels
    assert {"landing_helpdesk", "bronze_helpdesk", "silver_helpdesk", "quarantine_helpdesk"} <= set(labels)
    stats = server.query(
        '{ assetNodeOrError(assetKey: {path: ["landing_helpdesk"]}) { ... on AssetNode { partitionStats { numMaterialized numPartitions } } } }'
    )["assetNodeOrError"]["partitionStats"]
    assert stats == {"numMaterialized": 2, "numPartitions": 2}  # observed, not "0% filled"
    for asset, check in [("silver_helpdesk", "rows_accounted"), ("silver_helpdesk", "quarantine_rate"),
                         ("silver_helpdesk", "drift"), ("embeddings", "embedding_drift"),
                         ("vector_index", "searchable_within_sla")]:  # fmt: skip
        partition = f"{B2}|{HASHING}" if asset in ("embeddings", "vector_index") else B2
        [execution] = server.query(CHECK_QUERY, path=[asset], check=check, partition=partition)[
            "assetCheckExecutions"
        ]
        floats = [
            e for e in execution["evaluation"]["metadataEntries"] if e["__typename"] == "FloatMetadataEntry"
        ]
        assert floats, (asset, check, execution)
    # The landed -> searchable lag of each batch is a float on its index materialisations: the
    # asset's Plots tab draws those over time.
    mats = server.query(
        MATERIALISATIONS, path=["vector_index"], partitions=[f"{b}|{HASHING}" for b in (B1, B2)]
    )
    for mat in mats["assetOrError"]["assetMaterializations"]:
        [lag] = [e for e in mat["metadataEntries"] if e["label"] == "landed_to_searchable_s"]
        assert lag["__typename"] == "FloatMetadataEntry" and lag["floatValue"] >= 0, mat
    assert server.stale("bronze_helpdesk", [B1, B2]) == {B1: "FRESH", B2: "FRESH"}
    _a_shadow_build_is_a_backfill_the_daemon_runs(server, instance, root)
    text = server.log.read_text()
    assert "dagster.yaml" not in text, "dagster dev warned about an instance file"
    assert "Loading weights" not in text
