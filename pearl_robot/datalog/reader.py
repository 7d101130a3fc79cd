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

from pearl_robot.datalog.cdr import TransitionCodec
from pearl_robot.datalog.dataset import (
    DatasetError,
    DatasetPaths,
    layout_of,
    parse_segment_name,
    read_header,
    read_manifest,
)
from pearl_robot.datalog.episode import sha256_file, task_identity
from pearl_robot.datalog.mcap_reader import read_segment
from pearl_robot.datalog.mcap_writer import TRANSITION_TOPIC
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
    """What identifies the task: ``family``, ``index``, ``params`` (``episode.task_identity``;
    the full message of each episode is in ``EpisodeInfo.task``)."""
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
                  use_cache: bool, cache_dirs: list[Path] | None = None
                  ) -> tuple[np.ndarray, str]:
    sha = str(f.get("sha256", ""))
    cache_dirs = cache_dirs if cache_dirs is not None else _cache_dirs(ds.root)
    if use_cache and sha:
        for d in cache_dirs:
            try:
                mat = np.load(f"{d}/{sha}.npy", allow_pickle=False)
            except (OSError, ValueError):
                continue
            if mat.ndim == 2 and mat.shape[1] == codec.layout.size and \
                    mat.shape[0] == int(f.get("transitions", -1)):
                return mat, ""
    mat, err = read_segment_matrix(ds.root / f["path"], codec)
    if use_cache and sha and not err:
        for d in cache_dirs:
            try:
                d.mkdir(parents=True, exist_ok=True)
                tmp = d / f".{sha}.{os.getpid()}.tmp.npy"
                np.save(tmp, mat)
                os.replace(tmp, d / f"{sha}.npy")
                break
            except OSError:
                continue
    return mat, err


_SLICES: dict[TransitionLayout, dict[str, slice]] = {}


def _slices(layout: TransitionLayout) -> dict[str, slice]:
    got = _SLICES.get(layout)
    if got is None:
        got = _SLICES[layout] = layout.slices()
    return got


def _validate_episode(ds: str, e: dict[str, Any], mat: np.ndarray, layout: TransitionLayout,
                      problems: list[Problem]) -> bool:
    """Checks on one episode's matrix; False when it must not be used. Few numpy calls per
    episode: loading is dominated by reading, and this runs once per episode per load."""
    ep = int(e["episode"])
    ok = True
    n = mat.shape[0]
    if n != int(e.get("transitions", -1)):
        problems.append(Problem("error", ds, ep, f"{n} transitions in the files, manifest says "
                                f"{e.get('transitions')}"))
        ok = False
    if n == 0:
        return ok
    sl = _slices(layout)
    step = mat[:, sl["step"].start]
    if step[0] != 0:
        problems.append(Problem("warning", ds, ep, f"episode starts at step {int(step[0])}: "
                                "its first steps were not logged (a logger that subscribed "
                                "late, or restarted mid-episode)"))
    if n > 1 and not (step[-1] - step[0] == n - 1 and np.all(step[1:] > step[:-1])):
        d = np.diff(step)
        bad = int(np.argmax(d != 1))
        problems.append(Problem("warning", ds, ep, f"steps not contiguous: step "
                                f"{int(step[bad])} is followed by {int(step[bad + 1])}"))
    t = mat[:, sl["stamps"].start]
    if n > 1 and np.any(t[1:] < t[:-1]):
        problems.append(Problem("warning", ds, ep, "obs stamps go backwards"))
    col = mat[:, sl["episode"].start]
    lo, hi = float(col.min()), float(col.max())
    expected = {ep, int(e.get("source_episode", ep))}
    if not {int(lo), int(hi)} <= expected or (lo != hi and len(expected) == 1):
        problems.append(Problem("error", ds, ep, f"transitions carry episode ids {int(lo)}.."
                                f"{int(hi)}, expected {ep}"))
        ok = False
    head = mat[:, : sl["next_obs"].stop]
    total = float(head.sum())  # NaN/inf anywhere in obs..next_obs makes the sum non-finite
    if not np.isfinite(total):
        bad_rows = int((~np.isfinite(head).all(axis=1)).sum())
        problems.append(Problem("error", ds, ep, f"{bad_rows} transitions hold NaN/inf in obs, "
                                "action, reward or next_obs"))
        ok = False
    ret = e.get("return")
    got = float(mat[:, sl["reward"].start].sum())
    if ret is not None and abs(got - float(ret)) > 1e-9 * max(1.0, abs(float(ret))):
        problems.append(Problem("error", ds, ep, f"return {got:.6g} differs from the "
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
    layout_json = ds.layout.to_json()
    for e in entries:
        if e.get("layout") and e["layout"] != layout_json:
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
    datasets = _open_all([roots] if isinstance(roots, (str, Path)) else list(roots))
    layout = datasets[0].layout
    problems: list[Problem] = []
    work = _manifest_work(datasets, problems)
    it: Iterable[_Work] = work
    if progress:
        from tqdm import tqdm

        it = tqdm(work, desc="loading episodes", unit="ep")
    # pass 1: read every usable episode's segments (cache or MCAP); no per-episode numpy work
    read = _EpisodeReader(TransitionCodec(layout), set(statuses), use_cache, verify_sha,
                          datasets, problems)
    cands = [read(w) for w in it]
    # pass 2: one matrix in task order (the only copy), validated in bulk, sliced per task
    stacked = _stack_usable(cands, layout, problems)
    usable_set = set(stacked.order)
    episodes = [_episode_info(i, c, i in usable_set) for i, c in enumerate(cands)]
    errors = [p for p in problems if p.severity == "error"]
    if strict and errors:
        raise DatasetError("; ".join(str(p) for p in errors[:10])
                           + (f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""))
    for p in errors:
        log.warning("%s", p)
    return LoadedDataset(layout, _per_task(stacked, episodes, layout), episodes, problems)


def _open_all(roots: list[Path | str]) -> list[_Dataset]:
    """Open every dataset; they must share one layout to be loaded together."""
    if not roots:
        raise DatasetError("no dataset directories given")
    datasets = [open_dataset(r) for r in roots]
    layout = datasets[0].layout
    for ds in datasets[1:]:
        if ds.layout != layout:
            raise DatasetError(f"{ds.root}: layout {ds.layout.to_json()} differs from "
                               f"{datasets[0].root}'s {layout.to_json()}; load them separately")
    return datasets


class _Work(NamedTuple):
    """One manifest line to load."""

    ds: _Dataset
    entry: dict[str, Any]
    duplicate: bool
    """Its episode id is listed more than once in the manifest (never used)."""


def _manifest_work(datasets: list[_Dataset], problems: list[Problem]) -> list[_Work]:
    """Every manifest line of every dataset, after the dataset-level checks."""
    work: list[_Work] = []
    for ds in datasets:
        m = read_manifest(DatasetPaths(ds.root))
        dups = _manifest_problems(ds, m.entries, m.torn_tail, m.bad_lines, problems)
        work += [_Work(ds, e, int(e["episode"]) in dups) for e in m.entries]
    return work


class _Candidate(NamedTuple):
    """An episode after pass 1: its segments' matrices, and whether it may be used."""

    ds: _Dataset
    entry: dict[str, Any]
    mats: list[np.ndarray]
    usable: bool


class _EpisodeReader:
    """Pass 1 for one manifest line: the episode's segments read (from the cache or the MCAP
    files), each file's problem recorded; an episode with any failing file is not used."""

    def __init__(self, codec: TransitionCodec, statuses: set[str], use_cache: bool,
                 verify_sha: bool, datasets: list[_Dataset], problems: list[Problem]) -> None:
        self.codec = codec
        self.statuses = statuses
        self.use_cache = use_cache
        self.verify_sha = verify_sha
        self.problems = problems
        self.present: dict[Path, set[str]] = {}
        for ds in datasets:
            episodes_dir = DatasetPaths(ds.root).episodes
            self.present[ds.root] = ({f"episodes/{n}" for n in os.listdir(episodes_dir)}
                                     if episodes_dir.is_dir() else set())
        self.cache_dirs = {ds.root: _cache_dirs(ds.root) for ds in datasets}
        self.seen: set[tuple[str, int]] = set()

    def __call__(self, w: _Work) -> _Candidate:
        ds, e = w.ds, w.entry
        name, ep = str(ds.root), int(e["episode"])
        usable = e.get("status") in self.statuses and not w.duplicate and \
            (name, ep) not in self.seen
        self.seen.add((name, ep))
        mats: list[np.ndarray] = []
        if usable:
            for f in e.get("files", []):
                mat = self._file(ds, ep, f)
                if mat is None:
                    usable = False
                    break
                mats.append(mat)
        return _Candidate(ds, e, mats, usable)

    def _file(self, ds: _Dataset, ep: int, f: dict[str, Any]) -> np.ndarray | None:
        """One segment's matrix, or None with the reason in ``problems``."""
        name, path = str(ds.root), f["path"]
        if path not in self.present[ds.root]:
            why = f"missing file {path}"
        elif self.verify_sha and sha256_file(ds.root / path) != f.get("sha256"):
            why = f"{path}: sha256 differs from the manifest (file changed or corrupt)"
        else:
            try:
                mat, err = _load_segment(ds, f, self.codec, self.use_cache,
                                         self.cache_dirs[ds.root])
            except SchemaError as exc:
                mat, err = None, str(exc)
            if mat is not None and not err:
                return mat
            why = f"{path}: {err}"
        self.problems.append(Problem("error", name, ep, why))
        return None


class _Stacked(NamedTuple):
    """The usable episodes' transitions in one matrix, in task order."""

    order: list[int]
    """Candidate positions of the episodes in ``big``, in row order."""
    lengths: np.ndarray
    """Transitions of each of them."""
    big: np.ndarray


def _stack_usable(cands: list[_Candidate], layout: TransitionLayout,
                  problems: list[Problem]) -> _Stacked:
    """Concatenate the usable episodes sorted by task key, validate them in bulk, and drop
    the ones a check refuses."""
    order = sorted((i for i, c in enumerate(cands) if c.usable),
                   key=lambda i: (str(cands[i].entry.get("task_key", "")), i))
    lengths = np.array([sum(m.shape[0] for m in cands[i].mats) for i in order], dtype=np.int64)
    flat = [m for i in order for m in cands[i].mats]
    big = np.concatenate(flat) if flat else np.empty((0, layout.size))
    bad = _validate_bulk(big, lengths, [(str(cands[i].ds.root), cands[i].entry) for i in order],
                         layout, problems)
    if bad:
        keep = np.repeat(~np.isin(np.arange(len(order)), sorted(bad)), lengths)
        order = [i for k, i in enumerate(order) if k not in bad]
        lengths = np.array([n for k, n in enumerate(lengths) if k not in bad], dtype=np.int64)
        big = big[keep]
    return _Stacked(order, lengths, big)


def _episode_info(uid: int, c: _Candidate, usable: bool) -> EpisodeInfo:
    e = c.entry
    return EpisodeInfo(
        uid=uid, dataset=str(c.ds.root), episode=int(e["episode"]),
        status=str(e.get("status")), end_reason=str(e.get("end_reason", "")),
        task=dict(e.get("task") or {}), task_key=str(e.get("task_key", "")),
        transitions=int(e.get("transitions", 0)),
        episode_return=float(e["return"]) if e.get("return") is not None else float("nan"),
        duration_s=float(e.get("duration_s") or 0.0), model_sha=str(e.get("model_sha", "")),
        robot=str(e.get("robot", c.ds.header.get("robot", ""))), usable=usable)


def _per_task(stacked: _Stacked, episodes: list[EpisodeInfo], layout: TransitionLayout
              ) -> dict[str, TaskData]:
    """Slice the stacked matrix into one :class:`TaskData` per task key (views, no copy)."""
    order, lengths = stacked.order, stacked.lengths
    tasks: dict[str, TaskData] = {}
    b = layout.unpack_batch(stacked.big)
    uid_rows = np.repeat(np.asarray(order, dtype=np.int64), lengths)
    start = 0
    k = 0
    while k < len(order):
        key = episodes[order[k]].task_key
        j = k
        while j < len(order) and episodes[order[j]].task_key == key:
            j += 1
        stop = start + int(lengths[k:j].sum())
        rows = slice(start, stop)
        task = task_identity(episodes[order[k]].task)
        tasks[key] = TaskData(
            key=key, task=task, obs=b.obs[rows], action=b.action[rows], reward=b.reward[rows],
            next_obs=b.next_obs[rows], terminated=b.terminated[rows],
            truncated=b.truncated[rows], episode=uid_rows[rows], step=b.step[rows],
            stamps=b.stamps[rows], belief=b.belief[rows])
        start, k = stop, j
    return tasks


def _validate_bulk(big: np.ndarray, lengths: np.ndarray,
                   eps: list[tuple[str, dict[str, Any]]], layout: TransitionLayout,
                   problems: list[Problem]) -> set[int]:
    """The checks of :func:`_validate_episode` for many episodes stacked in ``big``, with a
    fixed number of numpy calls; returns positions (in ``eps``) of episodes not to use.
    Episodes with a finding are re-checked one by one to word the problem."""
    n_eps = len(eps)
    if n_eps == 0:
        return set()
    sl = _slices(layout)
    starts = np.zeros(n_eps, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    flagged = np.zeros(n_eps, dtype=bool)
    expected_n = np.array([int(e.get("transitions", -1)) for _, e in eps], dtype=np.int64)
    flagged |= expected_n != lengths
    flagged |= lengths == 0
    if big.shape[0]:
        first = np.zeros(big.shape[0], dtype=bool)
        first[starts[lengths > 0]] = True
        step = big[:, sl["step"].start]
        t0 = big[:, sl["stamps"].start]
        off = np.zeros(big.shape[0], dtype=bool)
        off[1:] = (step[1:] != step[:-1] + 1) | (t0[1:] < t0[:-1])
        off &= ~first
        off[first] = step[first] != 0  # an episode without its first steps
        ep_of_row = np.repeat(np.arange(n_eps), lengths)
        ids = np.array([int(e["episode"]) for _, e in eps], dtype=np.float64)
        src = np.array([float(e.get("source_episode", e["episode"])) for _, e in eps])
        col = big[:, sl["episode"].start]
        off |= (col != ids[ep_of_row]) & (col != src[ep_of_row])
        off |= ~np.isfinite(big[:, : sl["next_obs"].stop].sum(axis=1))
        flagged[np.unique(ep_of_row[off])] = True
        nz = lengths > 0
        sums = np.zeros(n_eps)
        sums[nz] = np.add.reduceat(big[:, sl["reward"].start], starts[nz])
        rets = np.array([float(e["return"]) if e.get("return") is not None else np.nan
                         for _, e in eps])
        has = ~np.isnan(rets)
        flagged[has] |= np.abs(sums[has] - rets[has]) > 1e-9 * np.maximum(1.0, np.abs(rets[has]))
    bad: set[int] = set()
    for k in np.flatnonzero(flagged).tolist():
        name, e = eps[k]
        mat = big[starts[k]: starts[k] + lengths[k]]
        if not _validate_episode(name, e, mat, layout, problems) or lengths[k] == 0:
            bad.add(k)
    return bad


def check_datasets(roots: Sequence[Path | str], verify_sha: bool = True) -> list[Problem]:
    """Every problem in the datasets (nothing cached, every file hashed)."""
    problems: list[Problem] = []
    for r in roots:
        try:
            problems += load_datasets([r], use_cache=False, verify_sha=verify_sha).problems
        except DatasetError as exc:
            msg = str(exc)  # it usually starts with the path, which Problem prints already
            msg = msg[len(f"{r}: "):] if msg.startswith(f"{r}: ") else msg
            problems.append(Problem("error", str(r), -1, msg))
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
