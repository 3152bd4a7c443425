"""Is a Delta table as the pipeline left it? Checked before sync or repair act on it.

Three kinds of damage are told apart: a log that cannot be read (a missing middle commit, a
corrupt commit file), a version that went backwards (the latest commits were deleted: the table
silently reads as an older one), and a data file that is missing or not the size its log says
(truncated, replaced). Each is one line naming the table and what is wrong; :func:`recover`
makes a damaged table readable again from its last intact version, by Delta time travel.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from embedding_assets.core.errors import root_cause

_INTERRUPTS = (KeyboardInterrupt, SystemExit, GeneratorExit)


@dataclass(frozen=True)
class Damage:
    table: str  # the table's name in the lake, e.g. ``gold/documents``
    problem: str

    def render(self) -> str:
        return f"lake table {self.table}: {self.problem}"


def _local(uri: str) -> Path | None:
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri.removeprefix("file://"))


def _open(uri: str, version: int | None = None) -> DeltaTable:
    """The table, any failure (a Rust panic included) raised as a plain RuntimeError."""
    try:
        return DeltaTable(uri, version=version)
    except (TableNotFoundError, *_INTERRUPTS):
        raise
    except BaseException as exc:  # noqa: BLE001 - pyo3 panics are BaseExceptions
        raise RuntimeError(root_cause(exc)) from exc


def damaged_files(dt: DeltaTable, uri: str) -> list[str]:
    """Data files of the table's current version that are missing or not the size the log says."""
    root = _local(uri)
    if root is None:
        return []
    actions = pa.table(dt.get_add_actions(flatten=True)).select(["path", "size_bytes"]).to_pylist()
    out = []
    for action in actions:
        path = root / unquote(action["path"])
        if not path.is_file():
            out.append(f"data file missing: {action['path']}")
        elif path.stat().st_size != action["size_bytes"]:
            out.append(
                f"data file damaged: {action['path']} is {path.stat().st_size} bytes, its log says "
                f"{action['size_bytes']}"
            )
    return out


def table_damage(name: str, uri: str, recorded: int | None) -> Damage | None:
    """What is wrong with one table, given the last version the pipeline recorded for it."""
    try:
        dt = _open(uri)
    except TableNotFoundError:
        if recorded is None:
            return None
        return Damage(name, f"missing, though version {recorded} was written (was it deleted or moved?)")
    except RuntimeError as exc:
        return Damage(name, f"its log cannot be read: {exc}")
    if recorded is not None and dt.version() < recorded:
        return Damage(
            name,
            f"went back from version {recorded}, the last one written, to {dt.version()}: its latest commits are missing",
        )
    files = damaged_files(dt, uri)
    if files:
        more = f" (and {len(files) - 3} more)" if len(files) > 3 else ""
        return Damage(name, "; ".join(files[:3]) + more)
    return None


def last_intact_version(uri: str, below: int | None = None) -> int | None:
    """The newest version (below ``below``, when given) whose log loads and whose files are whole."""
    root = _local(uri)
    logs = (
        sorted(int(p.stem) for p in (root / "_delta_log").glob("*.json") if p.stem.isdigit()) if root else []
    )
    for version in reversed([v for v in logs if below is None or v < below]):
        try:
            dt = _open(uri, version)
        except (TableNotFoundError, RuntimeError):
            continue
        if not damaged_files(dt, uri):
            return version
    return None


@dataclass(frozen=True)
class Recovered:
    table: str
    version: int  # the intact version whose rows were kept
    rows: int
    new_version: int
    kept_aside: str  # where the damaged table was moved (nothing is deleted)


def recover(name: str, uri: str, version: int | None = None) -> Recovered:
    """Rewrite the table from its last intact version (or ``version``): the damaged folder is moved
    aside, never deleted, and the rows of that version become the table's new first version."""
    root = _local(uri)
    if root is None:
        raise ValueError(f"{uri}: recovery works on a local lake only")
    good = version if version is not None else last_intact_version(uri)
    if good is None:
        raise ValueError(f"lake table {name}: no intact version to recover from")
    snapshot = _open(uri, good)
    if damaged_files(snapshot, uri):
        raise ValueError(f"lake table {name}: version {good} has damaged data files; pick an older one")
    rows: pl.DataFrame = pl.from_arrow(snapshot.to_pyarrow_table())  # type: ignore[assignment]
    aside = root.with_name(f"{root.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(root, aside)
    try:
        write_deltalake(str(root), rows.to_arrow(), mode="error", partition_by=["batch"])
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        os.replace(aside, root)
        raise
    return Recovered(name, good, rows.height, DeltaTable(str(root)).version(), str(aside))
