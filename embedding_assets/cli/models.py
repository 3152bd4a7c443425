"""``embedding-assets model ...`` and ``training ...``: the model lifecycle from the command line.
Every command takes ``--json``; a refused change prints one line and exits 2, nothing changed."""

from __future__ import annotations

import argparse
from typing import Any

from embedding_assets.cli.common import UsageError, emit
from embedding_assets.config import Settings


def cmd_list(args: argparse.Namespace) -> int:
    from embedding_assets.defs.models import list_models
    from embedding_assets.defs.resources import PipelineResource

    pipeline = PipelineResource()
    pipeline.ensure_registry()
    rows = list_models(pipeline)
    if args.json:
        emit([r.as_dict() for r in rows])
        return 0
    print(f"{'name':<28} {'role':<10} {'dim':>4} {'max_len':>7} {'complete':<8} {'rows':>6}  model id")
    for r in rows:
        print(
            f"{r.name:<28} {r.role:<10} {r.dimension:>4} {r.max_seq_length:>7} {'yes' if r.complete else 'no':<8} {r.rows:>6}  {r.model_id}"
        )
        if r.rollback_until:
            print(f"{'':<28} rollback possible until {r.rollback_until}")
    return 0


def _api_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The API model's options, when ``--api-base`` names one."""
    if not args.api_base:
        if args.api_key_env or args.tokenizer or args.max_tokens or args.price_per_1k_tokens:
            raise UsageError(
                "--api-key-env, --tokenizer, --max-tokens and --price-per-1k-tokens need --api-base"
            )
        return None
    return {
        "api_base": args.api_base, "api_key_env": args.api_key_env or "", "tokenizer": args.tokenizer or "",
        "max_tokens": args.max_tokens or 0, "price_per_1k_tokens": args.price_per_1k_tokens or 0.0,
    }  # fmt: skip


def cmd_add(args: argparse.Namespace) -> int:
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.lifecycle import add_model
    from embedding_assets.defs.resources import PipelineResource

    echo = (lambda _: None) if args.json else print
    with local_instance(Settings.from_env()) as instance:
        added = add_model(
            instance, PipelineResource(), args.target, args.name, build=not args.no_build, echo=echo,
            backend=args.backend, api=_api_options(args),
        )  # fmt: skip
    build = added.build
    out = {
        "name": added.spec.name, "role": "candidate", "model_id": added.spec.model_id, "dimension": added.spec.dimension,
        "max_seq_length": added.spec.max_seq_length, "table": added.spec.table,
        "backfill": None if build is None else {"id": build.backfill_id, "by_daemon": build.by_daemon,
                                                 "partitions": build.partitions, "failures": build.failed},
    }  # fmt: skip
    if args.json:
        emit(out)
    else:
        print(
            f"added {added.spec.name} ({added.spec.model_id}, dimension {added.spec.dimension}) as a candidate"
        )
        if build is not None and build.by_daemon:
            print(
                f"shadow build submitted to the Dagster daemon as backfill {build.backfill_id} ({len(build.partitions)} batches)"
            )
        elif build is not None:
            print(
                f"shadow build done as backfill {build.backfill_id}: {len(build.partitions)} batches, {len(build.failed)} failures"
            )
            print("\n".join(f"  FAILED: {f}" for f in build.failed))
    return 1 if build is not None and build.failed else 0


def _figures(e: Any) -> str:
    modes = sorted({k.split("/")[0] for k in e.figures})
    return "; ".join(
        f"{m}: recall@10 {e.figures.get(m + '/recall@10', 0):.3f}, MRR@10 {e.figures.get(m + '/mrr@10', 0):.3f}, "
        f"nDCG@10 {e.figures.get(m + '/ndcg@10', 0):.3f}"
        for m in modes
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.lifecycle import evaluate
    from embedding_assets.defs.resources import PipelineResource

    with local_instance(Settings.from_env()) as instance:
        found = evaluate(instance, PipelineResource(), [args.name] if args.name else None)
    if args.json:
        emit([e.as_dict() for e in found])
        return 0
    for e in found:
        print(
            f"{e.name} ({e.role}, {'complete' if e.complete else 'INCOMPLETE'}, index version {e.index_version})"
        )
        print(f"  {_figures(e) or 'no canary queries'}")
        print(f"  canary_regression: {'ok' if e.check_passed else 'FAILED'}: {e.check}")
    return 0 if all(e.check_passed for e in found) else 1


def cmd_promote(args: argparse.Namespace) -> int:
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.lifecycle import promote
    from embedding_assets.defs.resources import PipelineResource

    with local_instance(Settings.from_env()) as instance:
        done = promote(instance, PipelineResource(), args.name, force=args.force)
    out = {"serving": done.name, "previous": done.previous, "forced": done.forced, "problems": done.problems,
           "candidate": done.candidate.as_dict() if done.candidate else None,
           "was_serving": done.serving.as_dict() if done.serving else None}  # fmt: skip
    if args.json:
        emit(out)
        return 0
    if done.forced:
        print(f"WARNING: promoted despite: {'; '.join(done.problems)}")
    print(f"{done.name} now serves; {done.previous} is kept for rollback")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from embedding_assets.defs.lifecycle import rollback
    from embedding_assets.defs.resources import PipelineResource

    serving, rolled_from = rollback(PipelineResource())
    if args.json:
        emit({"serving": serving, "rolled_back_from": rolled_from})
    else:
        print(f"{serving} serves again; {rolled_from} is a candidate (its index is kept)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from embedding_assets.defs.resources import PipelineResource
    from embedding_assets.defs.training import export_training

    done = export_training(PipelineResource())
    if args.json:
        emit(done.as_dict())
    else:
        print(done.render())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.resources import PipelineResource
    from embedding_assets.defs.training import train_candidate

    echo = (lambda _: None) if args.json else print
    with local_instance(Settings.from_env()) as instance:
        done = train_candidate(
            instance, PipelineResource(), args.base, name=args.name, epochs=args.epochs, max_steps=args.max_steps,
            batch_size=args.batch_size, build=not args.no_build, echo=echo,
        )  # fmt: skip
    if args.json:
        emit(done.as_dict())
    else:
        print(done.render())
    return 0


def _runner_arguments(p: argparse.ArgumentParser) -> None:
    """What runs a model being added: a local backend, or an API and its pricing."""
    p.add_argument(
        "--backend",
        choices=["torch", "int8"],
        help="what runs it: torch (fp32 CPU, fp16 GPU) or int8 on onnxruntime (default: EA_EMBED_BACKEND, else torch)",
    )
    api = p.add_argument_group("a model behind an OpenAI-compatible API (PATH_OR_ID is its name there)")
    api.add_argument("--api-base", help="the API's base URL, e.g. https://api.openai.com/v1")
    api.add_argument("--api-key-env", help="the environment variable that holds the API key")
    api.add_argument(
        "--tokenizer", help="a local model folder whose tokenizer chunks for it (default: the bundled one)"
    )
    api.add_argument(
        "--max-tokens", type=int, help="its input limit in that tokenizer's tokens (default: that model's)"
    )
    api.add_argument(
        "--price-per-1k-tokens", type=float, help="what the API charges, for the `sync --dry-run` forecast"
    )


def add_parsers(sub: Any) -> None:
    model = sub.add_parser(
        "model", help="the embedding model registry: list, add, eval, promote, rollback, train"
    )
    verbs = model.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("list", help="every registered model, its role, and whether its index is complete")
    p.set_defaults(func=cmd_list)
    p = verbs.add_parser(
        "add", help="register a model as a candidate and build its shadow index for every batch"
    )
    p.add_argument(
        "target",
        metavar="PATH_OR_ID",
        help="a local model folder, or a sentence-transformers id in the offline cache",
    )
    p.add_argument("--name", help="its registry name (default: from its id)")
    p.add_argument("--no-build", action="store_true", help="register only; `sync` builds it")
    _runner_arguments(p)
    p.set_defaults(func=cmd_add)
    p = verbs.add_parser("eval", help="canary recall@10, MRR@10 and nDCG@10 per search mode")
    p.add_argument("--name", help="only this model (default: every active one)")
    p.set_defaults(func=cmd_eval)
    p = verbs.add_parser(
        "promote", help="make a complete candidate that passes the canary gate the serving model"
    )
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="promote even when the gate refuses (with a warning)")
    p.set_defaults(func=cmd_promote)
    p = verbs.add_parser("rollback", help="serve the previous model again (within its retention window)")
    p.set_defaults(func=cmd_rollback)
    p = verbs.add_parser(
        "train", help="fine-tune a model on the exported training triples and add it as a candidate"
    )
    p.add_argument("--base", required=True, help="the registered model to start from")
    p.add_argument("--name", help="the candidate's name (default: <base>-ft-<date>)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument(
        "--max-steps", type=int, default=0, help="stop after this many steps (0: the whole epochs)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-build", action="store_true", help="register only; `sync` builds it")
    p.set_defaults(func=cmd_train)
    for verb in verbs.choices.values():
        verb.add_argument("--json", action="store_true", help="machine-readable output")
    training = sub.add_parser("training", help="training data for fine-tuning")
    tverbs = training.add_subparsers(dest="verb", required=True)
    p = tverbs.add_parser(
        "export", help="(query, positive, hard negative) triples from gold, to a versioned Delta table"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_export)
