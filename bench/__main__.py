"""``python -m bench [--smoke] [--only SECTION ...]``: run the benchmarks, write
``bench/results/<date>.json`` and ``<date>.md``, and point ``bench/results/latest.md`` at them."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import machine

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = (
    "embed_stage", "incremental", "datapath", "index", "orchestration", "daemon", "canary", "maintenance", "scale",
    "int8", "serve", "gpu", "peer", "index_real", "stream",
)  # fmt: skip


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("LANCEDB_LOG", "error")
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, hashing embedder: seconds, not figures"
    )
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the data-path section")
    parser.add_argument("--vectors", type=int, default=1_000_000, help="vectors for the index section")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    stem = ("smoke-" if args.smoke else "") + datetime.now(UTC).strftime("%Y-%m-%d")
    previous = args.out / f"{stem}.json"
    # Sections run with --only join the day's earlier sections; each keeps its own time.
    report: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    report.update(
        {"date": datetime.now(UTC).isoformat(timespec="seconds"), "smoke": args.smoke, "machine": machine()}
    )
    cost = None
    for name in args.only:
        started = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        if name == "embed_stage":
            from bench import embed_stage

            report[name] = embed_stage.run(args.smoke)
            cost = 1 / report[name]["raw_chunks_per_s"]
        elif name == "incremental":
            from bench import incremental

            if cost is None and not args.smoke:
                from bench.embed_stage import sample_chunks
                from embedding_assets.embed.embedder import SentenceTransformerEmbedder

                embedder = SentenceTransformerEmbedder(device="auto")
                texts = sample_chunks(300, embedder)["text"].to_list()
                embedder.encode(texts[:32])
                t0 = time.perf_counter()
                embedder.encode(texts)
                cost = (time.perf_counter() - t0) / len(texts)
            report[name] = incremental.run(0.0 if args.smoke else float(cost or 0.0), args.smoke)
        elif name == "datapath":
            from bench import datapath

            report[name] = datapath.run(args.rows, args.smoke)
        elif name in ("index", "index_real"):
            from bench import index

            report[name] = index.run(
                args.vectors, args.smoke, "real" if name == "index_real" else "clustered"
            )
        elif name == "orchestration":
            from bench import orchestration

            report[name] = orchestration.run(args.smoke)
        elif name == "daemon":
            from bench import daemon

            report[name] = daemon.run(args.smoke)
        elif name == "canary":
            from bench import canary

            report[name] = canary.run(args.smoke)
        elif name == "maintenance":
            from bench import maintenance

            report[name] = maintenance.run(args.smoke)
        elif name == "scale":
            from bench import scale

            report[name] = scale.run(args.smoke)
        elif name in ("int8", "serve", "gpu"):
            from bench import fastpaths

            report[name] = getattr(fastpaths, name)(args.smoke)
        elif name == "peer":
            from bench import peer

            report[name] = peer.run(args.smoke)
        elif name == "stream":
            from bench import stream

            report[name] = stream.run(args.smoke)
        report[name]["section_s"] = round(time.perf_counter() - started, 1)
        report[name]["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        print(json.dumps(report[name], indent=2), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(render(report))
    if not args.smoke:
        latest = args.out / "latest.md"
        previous = latest.read_text() if latest.exists() else ""
        latest.write_text(merge_latest(previous, render(report), ran=list(args.only)))
    print(f"[bench] wrote {args.out / stem}.json and .md")
    return 0


def _row_key(row: str) -> str:
    """A summary row's section: the number and first word of its first cell ("3 data")."""
    return " ".join(row.strip("| ").split(" | ")[0].split()[:2])


def _blocks(page: str) -> tuple[list[str], list[str], list[tuple[str, list[str]]], list[str]]:
    """A rendered page as (head lines, summary rows, ``###`` blocks as (heading, lines), tail)."""
    lines = page.rstrip("\n").split("\n")
    start = lines.index("|---|---|---|---|") + 1 if "|---|---|---|---|" in lines else len(lines)
    end = start
    while end < len(lines) and lines[end].startswith("| "):
        end += 1
    head, rows, rest = lines[:start], lines[start:end], lines[end:]
    blocks: list[tuple[str, list[str]]] = []
    tail: list[str] = []
    for line in rest:
        if line.startswith("### "):
            blocks.append((line, [line]))
        elif line.startswith("What these figures mean"):
            tail.append(line)
        elif blocks and not tail:
            blocks[-1][1].append(line)
    return head, rows, blocks, tail


def _title(heading: str) -> str:
    """A ``###`` heading without its date or detail: what names the same table on two pages."""
    return heading.split(" (")[0].split(":")[0]


def merge_latest(previous: str, fresh: str, ran: list[str]) -> str:
    """latest.md from this day's render and the page it replaces: a summary row or a ``###`` table
    of a section this day did not measure is kept from the previous page, so ``--only X`` updates
    X and leaves the other figures where they were."""
    if not previous.strip() or "|---|---|---|---|" not in previous:
        return fresh
    head, rows, blocks, tail = _blocks(fresh)
    _, old_rows, old_blocks, _ = _blocks(previous)
    keys = {_row_key(r) for r in rows}
    kept = rows + [r for r in old_rows if _row_key(r) not in keys]
    kept.sort(key=lambda r: int(n) if (n := _row_key(r).split()[0]).isdigit() else 99)
    titles = {_title(h) for h, _ in blocks}
    merged = blocks + [(h, b) for h, b in old_blocks if _title(h) not in titles]
    note = (
        f"Measured on {head[0].removeprefix('# Benchmarks, ')[:10]}: {', '.join(ran)} (and that day's "
        "earlier sections); the other rows are kept from earlier runs, each in its dated file here."
    )
    body = [line for h, b in merged for line in b if not line.startswith("Measured on ")]
    out = [*head, *kept, "", note, "", *body, *tail]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)) + "\n"


def _index_builds(section: dict[str, Any]) -> list[str]:
    return [k for k, v in section.items() if isinstance(v, dict) and "settings" in v]


def _sweep_rows(section: dict[str, Any]) -> list[str]:
    """One table row per index build and search setting measured."""
    rows = []
    for name in _index_builds(section):
        for key, f in section[name]["settings"].items():
            nprobes, ef, refine = (part.split("=")[1] for part in key.split())
            rows.append(
                f"| {name} | {nprobes} | {ef} | {refine} | {f['recall_at_10']} | {f['p50_ms']} | {f['p99_ms']} |"
            )
    return rows


def _real_index_block(real: dict[str, Any]) -> list[str]:
    """The real-embeddings index section: its default, its best setting, and every setting."""
    return [
        "",
        f"### Index, real embeddings perturbed ({real['vectors']:,} × {real['dimension']}, {real['measured_at']}): recall@10 against p99, every setting",
        "",
        f"Flat scan p50 / p99 {real['flat_scan']['p50_ms']} / {real['flat_scan']['p99_ms']} ms. Default ({real['default_settings']}): recall@10 **{real['default']['recall_at_10']}**, p50 / p99 {real['default']['p50_ms']} / **{real['default']['p99_ms']}** ms."
        + (f" Best recall with p99 < 10 ms: {real['recommended']['index']}, {real['recommended']['search']}: {real['recommended']['recall_at_10']}, {real['recommended']['p99_ms']} ms." if real.get("recommended") else ""),
        "",
        "| index | nprobes | ef | refine | recall@10 | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ] + _sweep_rows(real)  # fmt: skip


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Benchmarks, {report['date']}{' (smoke: sizes too small to mean anything)' if report['smoke'] else ''}",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, GPU: {m['gpu'] or 'none'}; "
        f"Python {m['python']}, torch {m['torch']}, polars {m['polars']}.",
        "Every figure is a ratio against a baseline measured in the same run.",
        "",
        "| section | figure | value | target |",
        "|---|---|---|---|",
    ]
    e = report.get("embed_stage")
    if e:
        lines.append(
            f"| 1 embedding stage | pipeline / raw `encode` throughput ({e['chunks']} chunks, {e['embedder']}, {e['device']}) | **{e['ratio']}** ({e['pipeline_chunks_per_s']} vs {e['raw_chunks_per_s']} chunks/s) | ≥ 0.95 |"
        )
    i = report.get("incremental")
    if i:
        lines.append(
            f"| 2 incrementality | chunks embedded / chunks changed ({i['documents_edited']} of {i['documents']} docs edited) | **{i['edit_chunks_embedded']} / {i['changed_chunks']}** | equal |"
        )
        lines.append(
            f"| 2 incrementality | edit run / full run wall time | **{i['edit_over_full']}** ({i['edit_s']} s vs {i['full_s']} s) | ≤ 0.03 |"
        )
        lines.append(
            f"| 2 incrementality | no-change sync | {i['no_change_s']} s, {i['no_change_runs']} runs | |"
        )
        lines.append(f"| 2 incrementality | runs launched by the 1 % edit | **{i['runs_per_edit']}** | 1 |")
        r = i["rematerialise_unchanged"]
        lines.append(
            f"| 2 incrementality | whole graph of the unchanged partition materialised again: commits; s per asset partition ({r['asset_partitions']}) | **{sum(r['commits'].values())}; {r['s_per_asset_partition']} s** | 0; ≤ 2 s |"
        )
    d = report.get("datapath")
    if d:
        lines.append(
            f"| 3 data path ({d['rows']:,} rows) | rows/s vs pandas `iterrows` | **{d['speedup_vs_pandas']}×** ({d['ours']['rows_per_s']:,} vs {d['pandas_iterrows']['rows_per_s']:,} rows/s) | ≥ 25× |"
        )
        lines.append(
            f"| 3 data path | rows/s vs polars read + write floor | **{d['fraction_of_polars_floor']}** ({d['polars_floor']['rows_per_s']:,} rows/s) | ≥ 0.5 |"
        )
        lines.append(
            f"| 3 data path | peak RSS: ours / pandas / floor | {d['ours']['peak_rss_mib']} / {d['pandas_iterrows']['peak_rss_mib']} / {d['polars_floor']['peak_rss_mib']} MiB | ours ≤ 2× floor |"
        )
        if "polars_cleaning" in d:
            lines.append(
                f"| 3 data path | rows/s vs the pandas baseline's cleaning written in polars (reference) | {d['fraction_of_polars_cleaning']} ({d['polars_cleaning']['rows_per_s']:,} rows/s, {d['polars_cleaning']['peak_rss_mib']} MiB) | |"
            )
    x = report.get("index")
    if x:
        flat = x["flat_scan"]
        lines.append(
            f"| 4 index ({x['vectors']:,} × {x['dimension']}) | ingest | {x['ingest_vectors_per_s']:,} vectors/s | |"
        )
        lines.append(
            f"| 4 index | exact flat scan (the baseline): p50 / p99 | {flat['p50_ms']} / {flat['p99_ms']} ms | |"
        )
        d = x["default"]
        lines.append(
            f"| 4 index | **default** IVF_HNSW_SQ ({x['default_settings']}): recall@10; p50 / p99; p50 speed-up over flat | **{d['recall_at_10']}**; {d['p50_ms']} / **{d['p99_ms']}** ms; {round(flat['p50_ms'] / d['p50_ms'], 1)}× | ≥ 0.95; p99 < 10 ms |"
        )
        r = x.get("recommended")
        if r:
            lines.append(
                f"| 4 index | best recall with p99 < 10 ms in the sweep: {r['index']}, {r['search']} | {r['recall_at_10']}; {r['p50_ms']} / {r['p99_ms']} ms | |"
            )
        for name in _index_builds(x):
            lines.append(f"| 4 index | {name} build time | {x[name]['build_s']} s | |")
        lines.append(
            f"| 4 index | FTS p50 / p99; hybrid p50 / p99 | {x['fts_p50_ms']} / {x['fts_p99_ms']} ms; {x['hybrid_p50_ms']} / {x['hybrid_p99_ms']} ms | |"
        )
    real = report.get("index_real")
    if real:
        d = real["default"]
        lines.append(
            f"| 4 index, real embeddings perturbed ({real['vectors']:,} × {real['dimension']}) | **default**: recall@10; p50 / p99 | **{d['recall_at_10']}**; {d['p50_ms']} / **{d['p99_ms']}** ms | ≥ 0.95; p99 < 10 ms |"
        )  # fmt: skip
    o = report.get("orchestration")
    if o:
        p = o["partition"]
        lines.append(
            f"| 5 orchestration | one partition through Dagster / direct calls ({p['documents']} docs) | **{p['dagster_over_direct']}×** ({p['dagster_s']} s vs {p['direct_s']} s) | |"
        )
        t = o["no_change_tick"]
        lines.append(
            f"| 5 orchestration | no-change sensor tick, {t['batches']} batches (first tick, hashing every batch: {t['first_tick_s']} s) | **{t['tick_s']} s** | < 2 s |"
        )
    d = report.get("daemon")
    if d:
        lines.append(
            f"| 6 daemon | edit → searchable under `dagster dev`, {d['sensor_interval_s']} s sensor interval, p50 / p95 over {len(d['edit_to_searchable_s'])} edits | **{d['p50_s']} / {d['p95_s']} s** | p95 ≤ 60 s |"
        )
    mt = report.get("maintenance")
    if mt:
        b, a = mt["before"], mt["after"]
        lines.append(
            f"| 8 maintenance ({mt['batches']} small batches) | files on disk before → after: Delta data / Delta log / LanceDB; LanceDB versions | {b['delta_data_files']} → {a['delta_data_files']} / {b['delta_log_files']} → {a['delta_log_files']} / {b['lancedb_files']} → {a['lancedb_files']}; {b['lancedb_versions']} → {a['lancedb_versions']} | |"
        )
        lines.append(
            f"| 8 maintenance | search p99 after / before: hybrid; vector | **{mt['hybrid_p99_after_over_before']}** ({b['hybrid_p99_ms']} → {a['hybrid_p99_ms']} ms); **{mt['vector_p99_after_over_before']}** ({b['vector_p99_ms']} → {a['vector_p99_ms']} ms) | ≤ 1 |"
        )
    sc = report.get("scale")
    if sc:
        lines.append(
            f"| 9 scale ({sc['batches']} batches, production profile) | sync with 2 Celery workers vs 1 | **{sc['speedup']}×** ({sc['seconds']['2']} s vs {sc['seconds']['1']} s, {sc['steps']} steps) | |"
        )
    from bench.fastpaths import render as render_fastpaths

    lines += render_fastpaths(report)
    from bench.peer import render as render_peer

    lines += render_peer(report)
    st = report.get("stream")
    if st:
        lines.append(
            f"| 14 stream | skipped | {st['skipped']} | |" if "skipped" in st else
            f"| 14 stream | message published on NATS → searchable, p50 / p95 / max over {st['searchable']} of {st['messages']} messages at {st['rate_per_s']}/s, {st['micro_batches']} micro-batches, {st['model']} | **{st['lag_p50_s']} / {st['lag_p95_s']} / {st['lag_max_s']} s** | |"
        )  # fmt: skip
    if x:
        lines += ["", "### Index sweep (section 4): every setting measured", ""]
        lines += [
            "| index | nprobes | ef | refine | recall@10 | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += _sweep_rows(x)
    shared = report.get("index_shared_basis")
    if shared:
        lines += [
            "",
            f"### Index, harder data shape: every topic varying along one shared basis ({shared['measured_at']})",
            "",
            "| index | nprobes | ef | refine | recall@10 | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += _sweep_rows(shared)
    if real:
        lines += _real_index_block(real)
    c = report.get("canary")
    if c:
        from bench import canary

        lines += canary.render(c)
    lines += ["", "What these figures mean, and what changed because of them: [FINDINGS.md](../FINDINGS.md)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
