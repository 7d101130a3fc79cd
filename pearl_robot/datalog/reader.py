"""Dataset reader: one or many dataset directories (several nights, several robots) -> per-task
arrays ready for replay buffers, with validation and a derived cache.

Only manifest-listed episodes are read (status ``complete`` or ``recovered`` by default), so an
episode that is still being written, or that recovery has not closed yet, is never half-read.
Every check that fails is returned as a :class:`Problem` naming the dataset, episode and what is
wrong; episodes with errors are left out of the arrays (``strict=True`` raises instead).

Cache: each segment's transition matrix is stored as ``.cache/<sha256 of the segment>.npy``
(or under ``$XDG_CACHE_HOME/pearl_robot/datalog`` when the dataset is read-only). Segment files
never change after they are finished, so the sha256 recorded in the manifest is the key; a
cache file with the wrong shape is rebuilt. Delete ``.cache/`` at will.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pearl_robot.datalog.dataset import (
    DatasetError,
    DatasetPaths,
    layout_of,
    parse_segment_name,
    read_header,
    read_manifest,
)
from pearl_robot.datalog.episode import sha256_file
from pearl_robot.datalog.mcap_io import TRANSITION_TOPIC, TransitionCodec, read_segment
from pearl_robot.datalog.schema import SchemaError, TransitionLayout

log = logging.getLogger(__name__)

USABLE_STATUSES = ("complete", "recovered")


class Problem(NamedTuple):
    """One validation finding."""

    severity: str
    """error (the episode is not used) or warning (used, but look at it)."""
    dataset: str
    episode: int
    """-1 for dataset-level problems."""
    message: str

    def __str__(self) -> str:
        ep = f" episode {self.episode}" if self.episode >= 0 else ""
        return f"{self.severity}: {self.dataset}{ep}: {self.message}"


class EpisodeInfo(NamedTuple):
    """One manifest-listed episode (``uid`` indexes ``LoadedDataset.episodes``)."""

    uid: int
    dataset: str
    episode: int
    status: str
    end_reason: str
    task: dict[str, Any]
    task_key: str
    transitions: int
    episode_return: float
    duration_s: float
    model_sha: str
    robot: str
    usable: bool
    """Loaded into the arrays (no errors, usable status)."""


class TaskData(NamedTuple):
    """All transitions of one task, in episode order; physical units as logged."""

    key: str
    """Canonical task JSON (see ``episode.task_key``)."""
    task: dict[str, Any]
    """Task as logged (family, index, params, ...)."""
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode: np.ndarray
    """Episode uid per transition (index into ``LoadedDataset.episodes``)."""
    step: np.ndarray
    stamps: np.ndarray
    belief: np.ndarray

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.reward.shape[0])


class LoadedDataset(NamedTuple):
    """What :func:`load_datasets` returns."""

    layout: TransitionLayout
    tasks: dict[str, TaskData]
    """Per-task arrays keyed by task key."""
    episodes: list[EpisodeInfo]
    problems: list[Problem]

    @property
    def transitions(self) -> int:
        return sum(len(t) for t in self.tasks.values())


@dataclass
class _Dataset:
    root: Path
    layout: TransitionLayout
    header: dict[str, Any]


def open_dataset(root: Path | str) -> _Dataset:
    paths = DatasetPaths(Path(root))
    if not paths.root.is_dir():
        raise DatasetError(f"{paths.root}: no such dataset directory")
    header = read_header(paths)
    if header is None:
        raise DatasetError(f"{paths.root}: not a dataset (no dataset.json)")
    return _Dataset(paths.root, layout_of(header, paths.header), header)


def _cache_dirs(root: Path) -> list[Path]:
    user = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pearl_robot" / \
        "datalog"
    return [root / ".cache", user]


def read_segment_matrix(path: Path, codec: TransitionCodec) -> tuple[np.ndarray, str]:
    """All transitions of one segment as an (N, layout.size) float64 matrix, plus the reader's
    error ('' for an intact, finished file)."""
    read = read_segment(str(path), topics=(TRANSITION_TOPIC,))
    prefix = codec.prefix
    n_prefix = len(prefix)
    parts: list[bytes] = []
    for m in read.messages:
        if len(m.data) != codec.message_size or m.data[:n_prefix] != prefix:
            codec.decode(m.data)  # raises SchemaError naming the other layout
            raise SchemaError("transition message does not match the dataset layout")
        parts.append(m.data[n_prefix:])
    mat = np.frombuffer(b"".join(parts), dtype="<f8").reshape(len(parts), codec.layout.size)
    return mat.astype(np.float64, copy=False), read.error


def _load_segment(ds: _Dataset, f: dict[str, Any], codec: TransitionCodec,
                  use_cache: bool) -> tuple[np.ndarray, str]:
    path = ds.root / f["path"]
    sha = str(f.get("sha256", ""))
    if use_cache and sha:
        for d in _cache_dirs(ds.root):
            c = d / f"{sha}.npy"
            if c.exists():
                try:
                    mat = np.load(c, allow_pickle=False)
                except (OSError, ValueError):
                    continue
                if mat.ndim == 2 and mat.shape[1] == codec.layout.size and \
                        mat.shape[0] == int(f.get("transitions", -1)):
                    return mat, ""
    mat, err = read_segment_matrix(path, codec)
    if use_cache and sha and not err:
        for d in _cache_dirs(ds.root):
            try:
                d.mkdir(parents=True, exist_ok=True)
                tmp = d / f".{sha}.{os.getpid()}.tmp.npy"
                np.save(tmp, mat)
                os.replace(tmp, d / f"{sha}.npy")
                break
            except OSError:
                continue
    return mat, err


def _validate_episode(ds: str, e: dict[str, Any], mat: np.ndarray, layout: TransitionLayout,
                      problems: list[Problem]) -> bool:
    """Checks on one episode's matrix; False when it must not be used."""
    ep = int(e["episode"])
    ok = True
    b = layout.unpack_batch(mat)
    n = mat.shape[0]
    if n != int(e.get("transitions", -1)):
        problems.append(Problem("error", ds, ep, f"{n} transitions in the files, manifest says "
                                f"{e.get('transitions')}"))
        ok = False
    if n == 0:
        return ok
    if n > 1 and not np.all(np.diff(b.step) == 1):
        bad = int(np.argmax(np.diff(b.step) != 1))
        problems.append(Problem("warning", ds, ep, f"steps not contiguous: step {b.step[bad]} "
                                f"is followed by {b.step[bad + 1]}"))
    if n > 1 and np.any(np.diff(b.stamps[:, 0]) < 0):
        problems.append(Problem("warning", ds, ep, "obs stamps go backwards"))
    expected = {ep, int(e.get("source_episode", ep))}
    if not set(np.unique(b.episode).tolist()) <= expected:
        problems.append(Problem("error", ds, ep, f"transitions carry episode ids "
                                f"{sorted(set(np.unique(b.episode).tolist()))}, expected {ep}"))
        ok = False
    finite = np.isfinite(mat[:, : layout.slices()["next_obs"].stop]).all(axis=1)
    if not finite.all():
        problems.append(Problem("error", ds, ep, f"{int((~finite).sum())} transitions hold "
                                "NaN/inf in obs, action, reward or next_obs"))
        ok = False
    ret = e.get("return")
    if ret is not None and not np.isclose(float(b.reward.sum()), float(ret), rtol=1e-9,
                                          atol=1e-9):
        problems.append(Problem("error", ds, ep, f"return {b.reward.sum():.6g} differs from the "
                                f"manifest's {ret:.6g}"))
        ok = False
    return ok


def _manifest_problems(ds: _Dataset, entries: list[dict[str, Any]], torn: bytes,
                       bad: list[tuple[int, str]], problems: list[Problem]) -> set[int]:
    """Dataset-level checks; returns episode ids listed more than once."""
    name = str(ds.root)
    if torn:
        problems.append(Problem("error", name, -1, f"manifest ends with a torn line of "
                                f"{len(torn)} bytes (run `pearl-robot data recover`)"))
    for lineno, why in bad:
        problems.append(Problem("error", name, -1, f"manifest line {lineno}: {why}"))
    seen: dict[int, int] = {}
    for e in entries:
        seen[int(e["episode"])] = seen.get(int(e["episode"]), 0) + 1
    dups = {k for k, v in seen.items() if v > 1}
    for d in sorted(dups):
        problems.append(Problem("error", name, d, f"listed {seen[d]} times in the manifest"))
    listed = {f["path"] for e in entries for f in e.get("files", [])}
    paths = DatasetPaths(ds.root)
    if paths.episodes.is_dir():
        for p in sorted(paths.episodes.iterdir()):
            parsed = parse_segment_name(p.name)
            if parsed is None:
                continue
            if f"episodes/{p.name}" not in listed:
                what = "unfinished" if parsed[2] else "not in the manifest"
                problems.append(Problem("warning", name, parsed[0], f"{p.name} is {what} (an "
                                        "episode being written, or a crash: the logger or "
                                        "`pearl-robot data recover` closes it)"))
    for e in entries:
        if e.get("layout") and TransitionLayout.from_json(e["layout"]) != ds.layout:
            problems.append(Problem("error", name, int(e["episode"]),
                                    "layout differs from the dataset header"))
        if e.get("status") == "recovered":
            problems.append(Problem("warning", name, int(e["episode"]),
                                    f"recovered after a crash ({e.get('note', '')})"))
        elif e.get("status") == "quarantined":
            problems.append(Problem("warning", name, int(e["episode"]),
                                    f"quarantined, nothing readable: {e.get('quarantined')}"))
        if e.get("dropped"):
            problems.append(Problem("warning", name, int(e["episode"]),
                                    f"{e['dropped']} transitions dropped while logging"))
    return dups


def load_datasets(roots: Sequence[Path | str] | Path | str, *,
                  statuses: Iterable[str] = USABLE_STATUSES, use_cache: bool = True,
                  verify_sha: bool = False, strict: bool = False,
                  progress: bool = False) -> LoadedDataset:
    """Read datasets into per-task arrays. Raises DatasetError for unreadable directories,
    mismatched layouts across datasets, or (``strict``) any error-level problem."""
    if isinstance(roots, (str, Path)):
        roots = [roots]
    if not roots:
        raise DatasetError("no dataset directories given")
    datasets = [open_dataset(r) for r in roots]
    layout = datasets[0].layout
    for ds in datasets[1:]:
        if ds.layout != layout:
            raise DatasetError(f"{ds.root}: layout {ds.layout.to_json()} differs from "
                               f"{datasets[0].root}'s {layout.to_json()}; load them separately")
    codec = TransitionCodec(layout)
    statuses = set(statuses)
    problems: list[Problem] = []
    episodes: list[EpisodeInfo] = []
    per_task: dict[str, list[tuple[int, np.ndarray]]] = {}
    task_of: dict[str, dict[str, Any]] = {}
    work = []
    for ds in datasets:
        m = read_manifest(DatasetPaths(ds.root))
        dups = _manifest_problems(ds, m.entries, m.torn_tail, m.bad_lines, problems)
        for e in m.entries:
            work.append((ds, e, int(e["episode"]) in dups))
    it: Iterable[Any] = work
    if progress:
        from tqdm import tqdm

        it = tqdm(work, desc="loading episodes", unit="ep")
    seen_uid: set[tuple[str, int]] = set()
    for ds, e, dup in it:
        name, ep = str(ds.root), int(e["episode"])
        usable = e.get("status") in statuses and not dup and (name, ep) not in seen_uid
        seen_uid.add((name, ep))
        mats = []
        if usable:
            for f in e.get("files", []):
                path = ds.root / f["path"]
                if not path.exists():
                    problems.append(Problem("error", name, ep, f"missing file {f['path']}"))
                    usable = False
                    break
                if verify_sha and sha256_file(path) != f.get("sha256"):
                    problems.append(Problem("error", name, ep, f"{f['path']}: sha256 differs "
                                            "from the manifest (file changed or corrupt)"))
                    usable = False
                    break
                try:
                    mat, err = _load_segment(ds, f, codec, use_cache)
                except SchemaError as exc:
                    problems.append(Problem("error", name, ep, f"{f['path']}: {exc}"))
                    usable = False
                    break
                if err:
                    problems.append(Problem("error", name, ep, f"{f['path']}: {err}"))
                    usable = False
                    break
                mats.append(mat)
        mat = np.concatenate(mats) if mats else np.empty((0, layout.size))
        if usable:
            usable = _validate_episode(name, e, mat, layout, problems) and mat.shape[0] > 0
        info = EpisodeInfo(
            uid=len(episodes), dataset=name, episode=ep, status=str(e.get("status")),
            end_reason=str(e.get("end_reason", "")), task=dict(e.get("task") or {}),
            task_key=str(e.get("task_key", "")), transitions=int(e.get("transitions", 0)),
            episode_return=float(e["return"]) if e.get("return") is not None else float("nan"),
            duration_s=float(e.get("duration_s") or 0.0), model_sha=str(e.get("model_sha", "")),
            robot=str(e.get("robot", ds.header.get("robot", ""))), usable=usable)
        episodes.append(info)
        if usable:
            per_task.setdefault(info.task_key, []).append((info.uid, mat))
            task_of.setdefault(info.task_key, {k: v for k, v in info.task.items()
                                               if k != "episode"})
    errors = [p for p in problems if p.severity == "error"]
    if strict and errors:
        raise DatasetError("; ".join(str(p) for p in errors[:10])
                           + (f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""))
    for p in errors:
        log.warning("%s", p)
    tasks = {key: _task_arrays(key, task_of[key], items, layout)
             for key, items in per_task.items()}
    return LoadedDataset(layout, tasks, episodes, problems)


def _task_arrays(key: str, task: dict[str, Any], items: list[tuple[int, np.ndarray]],
                 layout: TransitionLayout) -> TaskData:
    mat = np.concatenate([m for _, m in items]) if len(items) > 1 else items[0][1]
    uid = np.concatenate([np.full(m.shape[0], u, dtype=np.int64) for u, m in items])
    b = layout.unpack_batch(mat)
    return TaskData(key=key, task=task, obs=b.obs, action=b.action, reward=b.reward,
                    next_obs=b.next_obs, terminated=b.terminated, truncated=b.truncated,
                    episode=uid, step=b.step, stamps=b.stamps, belief=b.belief)


def check_datasets(roots: Sequence[Path | str], verify_sha: bool = True) -> list[Problem]:
    """Every problem in the datasets (nothing cached, every file hashed)."""
    problems: list[Problem] = []
    for r in roots:
        try:
            problems += load_datasets([r], use_cache=False, verify_sha=verify_sha).problems
        except DatasetError as exc:
            problems.append(Problem("error", str(r), -1, str(exc)))
    return problems


def manifest_entries(root: Path | str) -> list[dict[str, Any]]:
    """The manifest lines of one dataset (for tools that follow a growing dataset)."""
    return read_manifest(DatasetPaths(Path(root))).entries


def describe(loaded: LoadedDataset) -> dict[str, Any]:
    """JSON-able summary: episodes by status, hours, per-task returns."""
    by_status: dict[str, int] = {}
    for e in loaded.episodes:
        by_status[e.status] = by_status.get(e.status, 0) + 1
    tasks = []
    for key, t in loaded.tasks.items():
        rets = [e.episode_return for e in loaded.episodes if e.usable and e.task_key == key]
        tasks.append({"task": t.task, "episodes": len(rets), "transitions": len(t),
                      "return_mean": float(np.mean(rets)), "return_std": float(np.std(rets)),
                      "return_min": float(np.min(rets)), "return_max": float(np.max(rets))})
    return {"datasets": sorted({e.dataset for e in loaded.episodes}),
            "layout": loaded.layout.to_json(), "episodes": len(loaded.episodes),
            "usable_episodes": sum(e.usable for e in loaded.episodes),
            "episodes_by_status": by_status, "transitions": loaded.transitions,
            "hours": sum(e.duration_s for e in loaded.episodes if e.usable) / 3600.0,
            "robots": sorted({e.robot for e in loaded.episodes}),
            "models": sorted({e.model_sha for e in loaded.episodes if e.model_sha}),
            "tasks": tasks,
            "problems": {"errors": sum(p.severity == "error" for p in loaded.problems),
                         "warnings": sum(p.severity == "warning" for p in loaded.problems)}}


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)
