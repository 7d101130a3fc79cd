"""Retraining from logged datasets: episode logs -> per-task replay buffers -> PEARL updates.

``pearl-robot train --data DIR... [--init CKPT] [--sim] [--follow]`` lands here (the train CLI
calls :func:`make_trainer` and :func:`follow`).

- Every logged task (same task JSON = same task, across nights and robots) gets its own pair of
  buffers. Actions are logged in physical units and normalized here with the action bounds the
  networks use (the task family's env spec, which ``--init`` checks against the checkpoint),
  exactly as the twin's collector stores them.
- Context, as in PEARL, comes from *recent* data of the same task: the encoder buffer of a task
  holds only its newest ``context_episodes`` episodes (ordered by their logged stamps), so the
  encoder is trained on near-on-policy context like the one the robot gathers when it explores
  a new task, while the RL buffer holds everything. Gradient steps draw tasks among those that
  have data.
- ``--sim`` adds the family's training tasks with the usual twin collection (prior/posterior
  phases); logged tasks are never simulated (the twin may not reproduce them), they only train.
  ``--sim-tasks N`` simulates only the first N of them, to set how much sim data is mixed in.
- ``--follow`` polls the manifests and adds each newly closed episode before the next
  iteration (new tasks grow the buffers), so a trainer can run next to the overnight logger.

Evaluation stays the reference protocol on the family's held-out tasks in the twin; when the
logged tasks are members of the family's task list, the adapted return on them is reported as
``eval/logged_final_return`` as well (the number that says whether retraining helped there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pearl_robot.core.config import ExperimentConfig
from pearl_robot.core.replay import MultiTaskReplay
from pearl_robot.core.replay import Path as ReplayPath
from pearl_robot.datalog.changes import split_at_changes
from pearl_robot.datalog.dataset import DatasetPaths
from pearl_robot.datalog.reader import LoadedDataset, load_datasets
from pearl_robot.errors import ConfigError
from pearl_robot.tasks.base import Task, TaskFamily, normalize_action
from pearl_robot.train.evaluation import evaluate_reference, summarize
from pearl_robot.train.trainer import MetaTrainer, _distinct_groups

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineConfig:
    """How logged data feeds the buffers."""

    context_episodes: int = 4
    """Newest episodes per task kept in the encoder (context) buffer."""
    poll_s: float = 5.0
    """--follow: how often to look for newly closed episodes while idle."""
    min_task_transitions: int = 1
    """Tasks with fewer logged transitions are not sampled for gradient steps."""
    max_logged_eval_tasks: int = 8
    """Logged tasks evaluated in the twin (when they are members of the family's list)."""


class OfflineTrainer(MetaTrainer):
    """MetaTrainer whose tasks are the logged tasks (plus, with ``sim``, the family's)."""

    def __init__(self, cfg: ExperimentConfig, family: TaskFamily, out_dir: str | Path,
                 data_dirs: Sequence[Path | str], *, sim: bool = False,
                 sim_tasks: int | None = None, offline: OfflineConfig | None = None,
                 tensorboard: bool = True, progress: bool = True) -> None:
        if family.context_reward_key is not None:
            raise ConfigError(
                f"task family {family.name} trains its encoder on a separate context reward "
                f"({family.context_reward_key!r}) that episode logs do not carry; retrain it "
                "in simulation")
        self.offline = offline or OfflineConfig()
        self.data_dirs = [Path(d) for d in data_dirs]
        sim = sim or sim_tasks is not None
        self.sim_tasks = _sim_task_subset(family, sim_tasks) if sim else []
        loaded = self._load()
        self.logged_keys: list[str] = []
        logged_tasks = self._new_tasks(loaded)
        if not logged_tasks and not self.sim_tasks:
            raise ConfigError(f"no usable episodes in {', '.join(map(str, self.data_dirs))} "
                              "(see `pearl-robot data check`); add --sim to train in the twin "
                              "meanwhile")
        super().__init__(cfg, family, out_dir, train_tasks=self.sim_tasks + logged_tasks,
                         sim_collection=sim, tensorboard=tensorboard, progress=progress)
        if (loaded.layout.obs_dim, loaded.layout.action_dim) != (self.spec.obs_dim,
                                                                 self.spec.action_dim):
            raise ConfigError(
                f"logged transitions have obs/action sizes {loaded.layout.obs_dim}/"
                f"{loaded.layout.action_dim}, task family {family.name} has "
                f"{self.spec.obs_dim}/{self.spec.action_dim}")
        self._loaded_eps: set[tuple[str, int]] = set()
        self._manifest_sizes: dict[Path, int] = {}
        self._ingest(loaded)

    # ------------------------------------------------------------------ data

    def _load(self) -> LoadedDataset:
        loaded = load_datasets(self.data_dirs, progress=False)
        for p in loaded.problems:
            if p.severity == "error":
                log.warning("skipping: %s", p)
        # a task that changed inside an episode (a detected change rebuilt the belief, an
        # operator reset it): the rows after the change are not this task's context
        return split_at_changes(loaded)

    def _new_tasks(self, loaded: LoadedDataset) -> list[Task]:
        tasks = []
        for key, t in loaded.tasks.items():
            if key in self.logged_keys:
                continue
            self.logged_keys.append(key)
            idx = t.task.get("index")
            tasks.append(Task(idx if isinstance(idx, int) else -1,
                              dict(t.task.get("params") or {})))
        return tasks

    def _slot(self, key: str) -> int:
        return len(self.sim_tasks) + self.logged_keys.index(key)

    def _grow(self, n_tasks: int) -> None:
        for name in ("rl_buffer", "enc_buffer"):
            old: MultiTaskReplay = getattr(self, name)
            if old.n_tasks >= n_tasks:
                continue
            new = MultiTaskReplay(n_tasks, old.capacity, old.obs_dim, old.action_dim)
            for k, arr in old.arrays.items():
                new.arrays[k][: old.n_tasks] = arr
            new.sizes[: old.n_tasks] = old.sizes
            new.tops[: old.n_tasks] = old.tops
            setattr(self, name, new)

    def _ingest(self, loaded: LoadedDataset) -> int:
        """Add episodes not seen before; returns how many transitions were added."""
        new_tasks = self._new_tasks(loaded)
        if new_tasks:
            self.train_tasks.extend(new_tasks)
            self._grow(len(self.train_tasks))
            # a logged task knows what the robot was told (its goal, say), not its payload:
            # labels it lacks are masked, never invented
            labels, mask = self.family.task_labels(self.train_tasks)
            self.train_labels = labels.astype(np.float32)
            self.train_label_mask = mask.astype(np.float32)
        low, high = self.spec.action_low, self.spec.action_high
        added = 0
        recent: dict[str, list[tuple[float, int]]] = {}
        for e in loaded.episodes:
            if not e.usable:
                continue
            recent.setdefault(e.task_key, []).append((self._episode_time(loaded, e.uid), e.uid))
        for key, t in loaded.tasks.items():
            slot = self._slot(key)
            uids = np.unique(t.episode)
            fresh = [u for u in uids.tolist()
                     if (loaded.episodes[u].dataset, loaded.episodes[u].episode)
                     not in self._loaded_eps]
            for u in fresh:
                rows = t.episode == u
                path = ReplayPath(
                    obs=t.obs[rows], actions=normalize_action(t.action[rows], low, high),
                    rewards=t.reward[rows], next_obs=t.next_obs[rows],
                    terminals=t.terminated[rows].astype(np.float32),
                    context_rewards=t.reward[rows])
                self.rl_buffer.add_path(slot, path)
                self._loaded_eps.add((loaded.episodes[u].dataset, loaded.episodes[u].episode))
                added += int(rows.sum())
            if fresh:  # context = the newest episodes of this task only
                times = recent.get(key) or [(self._episode_time(loaded, u), u)
                                            for u in uids.tolist()]  # a split-off segment
                newest = [u for _, u in sorted(times)[-self.offline.context_episodes:]]
                self.enc_buffer.clear(slot)
                for u in newest:
                    rows = t.episode == u
                    self.enc_buffer.add_path(slot, ReplayPath(
                        t.obs[rows], normalize_action(t.action[rows], low, high),
                        t.reward[rows], t.next_obs[rows], t.terminated[rows].astype(np.float32),
                        t.reward[rows]))
        for d in self.data_dirs:
            self._manifest_sizes[d] = _manifest_size(d)
        if added:
            log.info("logged data: +%d transitions; %d logged tasks, %d transitions in all",
                     added, len(self.logged_keys), self.rl_buffer.num_steps())
        return added

    @staticmethod
    def _episode_time(loaded: LoadedDataset, uid: int) -> float:
        t = loaded.tasks[loaded.episodes[uid].task_key]
        rows = np.flatnonzero(t.episode == uid)
        return float(t.stamps[rows[0], 0]) if rows.size else 0.0

    def poll_new_episodes(self) -> int:
        """Add episodes closed since the last look (cheap when no manifest grew)."""
        if all(_manifest_size(d) == self._manifest_sizes.get(d) for d in self.data_dirs):
            return 0
        return self._ingest(self._load())

    # ------------------------------------------------------------------ training

    def _ready(self) -> np.ndarray:
        ok = (self.rl_buffer.sizes >= self.offline.min_task_transitions) & \
            (self.enc_buffer.sizes > 0)
        return np.flatnonzero(ok[: len(self.train_tasks)])

    def trainable_tasks(self) -> np.ndarray:
        """Gradient steps draw only tasks that have enough logged (or simulated) data."""
        return self._ready()

    def run_iteration(self):  # noqa: ANN201 - same as MetaTrainer.run_iteration
        """Sim collection (sim tasks only) when enabled, then the parent's steps."""
        if not self.sim_collection:
            return super().run_iteration()
        tc = self.cfg.train
        n_sim = len(self.sim_tasks)
        if not self.initial_done:
            self.collect(list(range(n_sim)), tc.num_initial_steps, update_posterior=False,
                         add_to_enc=True, phase="initial")
            self.initial_done = True
        chosen = self.rng.integers(n_sim, size=tc.num_tasks_sample).tolist()
        for group in _distinct_groups(chosen):
            for t in group:
                self.enc_buffer.clear(t)
            self.collect(group, tc.num_steps_prior, update_posterior=False, add_to_enc=True,
                         phase="prior")
            self.collect(group, tc.num_steps_posterior, update_posterior=True,
                         add_to_enc=True, phase="posterior")
            self.collect(group, tc.num_extra_rl_steps_posterior, update_posterior=True,
                         add_to_enc=False, phase="extra")
        # the parent must not collect again: run its training/eval part only
        self.sim_collection = False
        try:
            return super().run_iteration()
        finally:
            self.sim_collection = True

    def evaluate(self) -> dict[str, float]:
        row = super().evaluate()
        idx = self._logged_family_indices()
        if idx:
            tc = self.cfg.train
            res = summarize(evaluate_reference(
                self.agent, self.family, idx, self.envs, num_steps=tc.num_steps_per_eval,
                max_path_length=tc.max_path_length, num_exp_traj=tc.num_exp_traj_eval,
                repeats=tc.num_evals, seed=self._seed("eval", 1, 0)), tc.num_exp_traj_eval)
            row["eval/logged_final_return"] = res.final_return
            row["eval/logged_first_return"] = res.first_return
        return row

    def _logged_family_indices(self) -> list[int]:
        tasks = self.family.tasks
        out = []
        for t in self.train_tasks[len(self.sim_tasks):]:
            if 0 <= t.index < len(tasks) and tasks[t.index].params == t.params:
                out.append(t.index)
        return sorted(set(out))[: self.offline.max_logged_eval_tasks]


def _manifest_size(root: Path) -> int:
    try:
        return DatasetPaths(root).manifest.stat().st_size
    except FileNotFoundError:
        return 0


def _sim_task_subset(family: TaskFamily, count: int | None) -> list:
    """The family's first ``count`` training tasks (all of them for None): how much simulated
    data is mixed with the logs is set by how many twin tasks take part."""
    pool = list(family.train_tasks)
    if count is None:
        return pool
    if not 1 <= count <= len(pool):
        raise ConfigError(f"--sim-tasks must be between 1 and {len(pool)} (the {family.name} "
                          f"training tasks), got {count}")
    return pool[:count]


def make_trainer(cfg: ExperimentConfig, family: TaskFamily, out: str | Path,
                 data_dirs: Sequence[Path | str], *, sim: bool = False,
                 sim_tasks: int | None = None, init: Path | str | None = None,
                 tensorboard: bool = True, progress: bool = True,
                 offline: OfflineConfig | None = None) -> OfflineTrainer:
    """The trainer behind ``pearl-robot train --data``; ``init`` warm-starts the networks
    (weights only) from a checkpoint, e.g. the model that collected the data; ``sim_tasks``
    (implies ``sim``) simulates only the family's first N training tasks."""
    trainer = OfflineTrainer(cfg, family, out, data_dirs, sim=sim, sim_tasks=sim_tasks,
                             offline=offline, tensorboard=tensorboard, progress=progress)
    if init is not None:
        trainer.load_state(init, weights_only_init=True)
    return trainer


def follow(trainer: OfflineTrainer, data_dirs: Sequence[Path | str] | None = None, *,
           max_iterations: int | None = None,
           stop: Callable[[OfflineTrainer], bool] | None = None,
           sleep: Callable[[float], Any] = time.sleep) -> dict[str, float]:
    """Train while the datasets grow: before every iteration, add newly closed episodes.

    Runs until ``max_iterations`` (default: the config's ``num_iterations``; pass a large
    number to run all night), ``stop(trainer)`` returns True, or Ctrl-C. Checkpoints as the
    config says, so the newest model is always on disk for export."""
    if data_dirs is not None and [Path(d) for d in data_dirs] != trainer.data_dirs:
        raise ConfigError("follow() must watch the directories the trainer was built on")
    end = max_iterations if max_iterations is not None else trainer.cfg.train.num_iterations
    trainer._write_run_files()  # noqa: SLF001 - same run files as run()
    row: dict[str, float] = {}
    try:
        while trainer.iteration < end:
            if stop is not None and stop(trainer):
                break
            added = trainer.poll_new_episodes()
            if trainer._ready().size == 0:  # noqa: SLF001 - nothing logged yet: wait
                sleep(trainer.offline.poll_s)
                continue
            row = trainer.run_iteration().metrics
            if added:
                log.info("iteration %d trained with %d new logged transitions",
                         trainer.iteration - 1, added)
    except KeyboardInterrupt:
        log.info("follow: interrupted at iteration %d", trainer.iteration)
    finally:
        trainer.metrics.close()
    return row
