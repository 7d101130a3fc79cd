"""Meta-training beyond one process: Ray rollout workers and dataset followers, one learner.

``pearl-robot train --ray [ADDRESS] --workers N`` lands here (the train CLI calls :func:`train`).

Picture (docs/architecture.md, "Distributed meta-training"): the learner process owns the
networks, the optimizers, every per-task RL and encoder buffer and the update loop, exactly as
:class:`~pearl_robot.train.trainer.MetaTrainer` does on one machine (it *is* that trainer, or
the logged-data :class:`~pearl_robot.train.offline.OfflineTrainer`). What moves out are the two
things that read the world:

- :class:`RolloutWorker` (a Ray actor, ``--workers N``): holds the family's environments
  (the same lockstep batch of envs the single-process sampler uses), and runs *jobs*: a share of
  one collection group's tasks through the PEARL phases of an iteration (prior -> posterior ->
  extra-RL, with the task's encoder buffer cleared first), or a share of the initial
  collection. The collection code is the trainer's own (``MetaTrainer.collect`` on a worker-side
  trainer whose RL buffer is replaced by a recorder), so the data schedule cannot drift. A job
  returns whole trajectories, tagged with the weight version that produced them.
- :class:`DatasetFollower` (a Ray actor, with ``--data``): reads the logger's dataset
  directories where they live (``--data-node`` pins it to the machine with the disk), and hands
  the learner the datasets whenever a manifest grew (a closed episode), like ``train --follow``.

Decisions (written down because nobody answers questions):

- **Schedule.** PEARL's data schedule is unchanged: the initial collection before iteration 0,
  then per iteration ``num_tasks_sample`` tasks, split into groups of distinct tasks, each group
  cleared and collected prior/posterior/extra-RL; ``num_train_steps_per_itr`` gradient steps;
  evaluation and checkpoints on the trainer's own schedule. A job's posterior updates use a
  worker-side encoder buffer that holds exactly what the learner's would (cleared at the job's
  start, then the job's own prior/posterior data), so re-inference inside a job is the
  reference's.
- **Synchronous** (``max_staleness 0``, the default): round *i* is collected with the weights
  after *i* learner iterations and applied before iteration *i*'s gradient steps: the reference
  order. **Asynchronous** (``max_staleness K >= 1``): rounds *i..i+K* are in flight while the
  learner trains, so data reaches the learner at most K weight versions old; the staleness of
  every applied round is in the metrics.
- **Determinism.** A round's task choice comes from a generator seeded by (run seed, round) and
  every job's actor noise and context draws from one seeded by (run seed, round, job); env resets
  are seeded exactly as in the single-process trainer. So a run is reproducible for a given
  ``--workers`` (which worker runs a job does not matter, and a job re-run after a worker died
  returns the same trajectories), but it is not bit-identical to the single-process trainer,
  whose collection draws from the learner's own generators. Resuming a synchronous run from a
  checkpoint with replay buffers continues bit-exactly; an asynchronous resume re-collects the
  rounds that were in flight with the checkpoint's weights.
- **Faults.** Results are applied per round, in job order, once every job of the round has
  returned, and each job at most once (by id), so a dead worker's partial trajectory never
  reaches a buffer and no transition is counted twice or lost: ``env_steps`` counts exactly the
  applied transitions. A worker that dies (killed, OOM, node lost) is replaced by a fresh actor
  and its unfinished jobs resubmitted (at most ``max_job_restarts`` times per job). A job that
  *raises* is a bug or a bad environment: the remote traceback goes to the learner's log and
  training stops with :class:`DistributedTrainingError` instead of hanging. ``job_timeout_s``
  turns a hung worker into a dead one.
- **Ray is optional.** Nothing outside this module imports Ray, and this module imports it only
  inside functions; the robot install and the single-process trainer never load it (a test
  asserts it). Install it with the ``distributed`` extra.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pearl_robot.core.config import ExperimentConfig, merge
from pearl_robot.core.replay import MultiTaskReplay
from pearl_robot.core.replay import Path as ReplayPath
from pearl_robot.errors import ConfigError, PearlRobotError
from pearl_robot.tasks.base import Task, TaskFamily
from pearl_robot.train.metrics import plot_learning_curve
from pearl_robot.train.trainer import IterationResult, MetaTrainer, _distinct_groups

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'pearl_robot[distributed]' (Ray 2.60)"

# which phases feed the encoder buffer as well as the RL buffer (trainer.run_iteration)
_ADDS_TO_ENC = {"initial": True, "prior": True, "posterior": True, "extra": False}
# networks the acting side needs; the critics and targets stay on the learner
_ACTING_PREFIXES = ("actor.", "encoder.", "obs_norm.")


class DistributedTrainingError(PearlRobotError):
    """A rollout worker raised, or kept dying; the message names the worker and the job."""


@dataclass(frozen=True)
class DistributedConfig:
    """Where the workers run and how far they may run ahead of the learner."""

    address: str | None = None
    """Ray cluster: None starts a local one in this process; "auto" joins the running cluster
    (``ray start --head`` on this machine); "HOST:PORT" or "ray://HOST:PORT" a remote head."""
    workers: int = 2
    """Rollout worker actors (each one process with its own environments)."""
    max_staleness: int = 0
    """0: synchronous, the reference order. K >= 1: rounds up to K iterations ahead are
    collected while the learner trains, with weights at most K versions old."""
    worker_cpus: float = 1.0
    """Ray CPUs reserved per worker (fractions let more workers share a core)."""
    num_cpus: int | None = None
    """Local cluster only: logical CPUs it advertises (None: enough for the workers)."""
    max_job_restarts: int = 3
    """Resubmissions of one job after its worker died before training stops."""
    job_timeout_s: float = 0.0
    """A job running longer is treated as a dead worker (0: no limit)."""
    start_timeout_s: float = 300.0
    """Workers not set up by then (e.g. the cluster lacks the CPUs they ask for) stop the run
    with an error naming the shortfall instead of waiting forever."""
    data_node: str | None = None
    """Node IP the dataset follower must run on (where the robots' logs are); None: anywhere."""
    worker_niceness: int | None = None
    """Local cluster only: the workers' Unix niceness. None keeps Ray's default (15), which
    lets the learner win the CPU on a machine it shares with its workers; 0 competes equally."""
    object_store_mb: int = 1024
    """Local cluster only: shared-memory object store size (weights and trajectories are
    small; Ray's default takes 30 % of RAM, which a shared workstation notices)."""

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"--workers must be an integer >= 1, got {self.workers!r}")
        if not isinstance(self.max_staleness, int) or self.max_staleness < 0:
            raise ConfigError(f"--max-staleness must be an integer >= 0, got "
                              f"{self.max_staleness!r}")
        if not self.worker_cpus > 0:
            raise ConfigError(f"--worker-cpus must be > 0, got {self.worker_cpus!r}")
        if self.max_job_restarts < 0 or self.job_timeout_s < 0:
            raise ConfigError("max_job_restarts and job_timeout_s must be >= 0")

    @property
    def synchronous(self) -> bool:
        return self.max_staleness == 0


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--ray needs Ray, which is not installed here ({exc}); "
                          f"{INSTALL_HINT}. Without --ray, training runs in one process.") \
            from exc
    return ray


def connect(dcfg: DistributedConfig) -> Any:
    """Start or join the Ray cluster (no-op when this process is already connected)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING,
                                  configure_logging=False)
    if dcfg.address is None:
        cores = os.cpu_count() or 1
        need = math.ceil(dcfg.workers * dcfg.worker_cpus)
        ncpu = dcfg.num_cpus if dcfg.num_cpus is not None else max(cores, need)
        if need > cores:
            log.warning("%d workers x %.2g CPUs on %d cores: workers share cores", dcfg.workers,
                        dcfg.worker_cpus, cores)
        system = {} if dcfg.worker_niceness is None else \
            {"worker_niceness": dcfg.worker_niceness}
        ray.init(address="local", num_cpus=ncpu,
                 object_store_memory=dcfg.object_store_mb * 2**20, _system_config=system,
                 **kwargs)
    else:
        try:
            ray.init(address=dcfg.address, **kwargs)
        except ConnectionError as exc:
            raise ConfigError(f"--ray {dcfg.address}: cannot join the Ray cluster ({exc}); "
                              "start one with `ray start --head` or give its address") from exc
    return ray


# ---------------------------------------------------------------------------- messages
class PhaseSpec(NamedTuple):
    """One collection phase of a job (trainer.run_iteration's collect() calls)."""

    phase: str
    """initial | prior | posterior | extra."""
    num_steps: int
    """At least this many env steps per task (whole trajectories)."""
    update_posterior: bool
    """Re-infer z from the job's encoder data every ``update_post_train`` trajectories."""


class RolloutJob(NamedTuple):
    """What the learner asks one worker to collect."""

    job_id: str
    """Unique in the run: ``r<round>/<kind>/g<group>/s<shard>``; a result is applied once."""
    round: int
    """The iteration whose collection this is (also seeds env resets, as in the trainer)."""
    tasks: tuple[int, ...]
    """Training-task slots (indices into the learner's train_tasks)."""
    phases: tuple[PhaseSpec, ...]
    clear_enc: bool
    """Clear these tasks' encoder buffers before the job's data goes in (PEARL's per-collection
    reset; the initial collection does not)."""
    seed: int
    """Seeds the job's actor noise and context sampling."""
    version: int
    """Weight version (learner iterations completed) the job runs with."""
    weights: list
    """[ObjectRef or state dict] of the acting networks; a list so Ray does not resolve it
    before the worker knows whether it already holds this version."""


class PathRecord(NamedTuple):
    """One trajectory of a job, where it goes on the learner."""

    slot: int
    phase: str
    path: ReplayPath


class RolloutResult(NamedTuple):
    """A finished job: whole trajectories and what the progress report needs."""

    job_id: str
    round: int
    version: int
    """The weight version that produced every trajectory here."""
    worker: int
    paths: list[PathRecord]
    env_steps: int
    busy_s: float
    """Seconds the worker spent on the job (weight pull included)."""
    pull_s: float
    """Seconds spent fetching new weights (0 when it already held the version)."""
    host: str


def acting_state(trainer: MetaTrainer) -> dict[str, torch.Tensor]:
    """The weights a worker needs to act and infer z (CPU tensors)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in trainer.nets.state_dict().items()
            if k.startswith(_ACTING_PREFIXES)}


class _PathRecorder:
    """Stands in for the RL buffer of a worker-side trainer: keeps each path with its task
    and phase instead of storing it (the learner's buffers are the only ones)."""

    def __init__(self) -> None:
        self.phase = ""
        self.records: list[PathRecord] = []

    def add_path(self, task: int, path: ReplayPath) -> None:
        self.records.append(PathRecord(int(task), self.phase, path))


# ---------------------------------------------------------------------------- worker side
class RolloutWorker:
    """Collects jobs with the trainer's own collection code. A plain class: the pool wraps it
    in ``ray.remote``; tests may also run it in-process."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.trainer: MetaTrainer | None = None
        self.version = -1
        self._dir: str | None = None
        self.host = platform.node()

    def configure(self, family: TaskFamily, cfg: ExperimentConfig, tasks: Sequence[Task]
                  ) -> int:
        """Build the worker-side trainer (networks and envs) for a run; returns the pid."""
        tc = cfg.train
        enc_cap = max(tc.num_initial_steps, tc.num_steps_prior + tc.num_steps_posterior) + \
            2 * tc.max_path_length
        small = merge(cfg, {"train": {"replay_capacity": 1, "device": "cpu"}},
                      where="rollout worker")
        self.close()
        self._dir = tempfile.mkdtemp(prefix=f"pearl-worker{self.worker_id}-")
        tr = MetaTrainer(small, family, self._dir, train_tasks=list(tasks), tensorboard=False,
                         progress=False)
        tr.enc_buffer = MultiTaskReplay(len(tasks), enc_cap, tr.spec.obs_dim, tr.spec.action_dim)
        self.trainer = tr
        self.version = -1
        return os.getpid()

    def _pull(self, version: int, weights: list) -> float:
        if version == self.version:
            return 0.0
        t0 = time.perf_counter()
        state = weights[0]
        if not isinstance(state, dict):
            import ray

            state = ray.get(state)
        missing, unexpected = self.trainer.nets.load_state_dict(state, strict=False)
        if unexpected or any(k.startswith(_ACTING_PREFIXES) for k in missing):
            raise DistributedTrainingError(f"worker {self.worker_id}: weights do not match the "
                                           f"networks (unexpected {unexpected[:3]})")
        self.version = version
        return time.perf_counter() - t0

    def run(self, job: RolloutJob) -> RolloutResult:
        if self.trainer is None:
            raise DistributedTrainingError(f"worker {self.worker_id} was not configured")
        t0 = time.perf_counter()
        pull = self._pull(job.version, job.weights)
        tr = self.trainer
        tr.iteration = job.round  # env-reset seeds as the single-process trainer's
        tr.rng = np.random.default_rng([job.seed, 1])
        tr.learner.generator.manual_seed(job.seed)  # the agent's noise generator
        rec = _PathRecorder()
        tr.rl_buffer = rec
        tasks = list(job.tasks)
        if job.clear_enc or job.phases[0].phase == "initial":
            for t in tasks:
                tr.enc_buffer.clear(t)
        for ph in job.phases:
            rec.phase = ph.phase
            tr.collect(tasks, ph.num_steps, update_posterior=ph.update_posterior,
                       add_to_enc=_ADDS_TO_ENC[ph.phase], phase=ph.phase)
        steps = sum(len(r.path.obs) for r in rec.records)
        return RolloutResult(job.job_id, job.round, job.version, self.worker_id, rec.records,
                             steps, time.perf_counter() - t0, pull, self.host)

    def ping(self) -> tuple[int, str]:
        return os.getpid(), self.host

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class DatasetFollower:
    """Reads dataset directories where they are stored; answers when a manifest grew."""

    def __init__(self, data_dirs: Sequence[str | Path], poll_s: float = 1.0) -> None:
        self.data_dirs = [Path(d) for d in data_dirs]
        self.poll_s = poll_s
        self._sizes: dict[Path, int] = {}

    def _manifest_sizes(self) -> dict[Path, int]:
        from pearl_robot.train.offline import _manifest_size

        return {d: _manifest_size(d) for d in self.data_dirs}

    def load(self):  # noqa: ANN201 - datalog.reader.LoadedDataset
        from pearl_robot.datalog.reader import load_datasets

        self._sizes = self._manifest_sizes()
        return load_datasets(self.data_dirs, progress=False)

    def wait_for_change(self, timeout_s: float):  # noqa: ANN201 - LoadedDataset | None
        """The datasets as soon as a manifest grew (an episode closed), None after timeout."""
        end = time.monotonic() + timeout_s
        while True:
            if self._manifest_sizes() != self._sizes:
                return self.load()
            if time.monotonic() >= end:
                return None
            time.sleep(min(self.poll_s, max(0.0, end - time.monotonic())))

    def where(self) -> str:
        return platform.node()


# ---------------------------------------------------------------------------- learner side
class WorkerPool:
    """Rollout worker actors on the cluster: create, configure, replace when dead.

    A pool outlives a trainer: a learner restarted from its checkpoint (or a second run) can
    configure the same workers again."""

    def __init__(self, dcfg: DistributedConfig) -> None:
        self.ray = connect(dcfg)
        self.dcfg = dcfg
        self._cls = self.ray.remote(num_cpus=dcfg.worker_cpus, max_restarts=0,
                                    max_task_retries=0)(RolloutWorker)
        self.handles = [self._cls.remote(i) for i in range(dcfg.workers)]
        self.incarnation = [0] * dcfg.workers
        self.replaced = 0
        self._setup: tuple | None = None
        self.pids: list[int] = [0] * dcfg.workers

    @property
    def size(self) -> int:
        return len(self.handles)

    def configure(self, family: TaskFamily, cfg: ExperimentConfig, tasks: Sequence[Task]
                  ) -> None:
        self._setup = (family, cfg, list(tasks))
        refs = [h.configure.remote(*self._setup) for h in self.handles]
        try:
            self.pids = self.ray.get(refs, timeout=self.dcfg.start_timeout_s)
        except self.ray.exceptions.GetTimeoutError:
            have = self.ray.cluster_resources().get("CPU", 0)
            raise DistributedTrainingError(
                f"{len(refs)} rollout workers did not start within "
                f"{self.dcfg.start_timeout_s:.0f} s: they ask for {self.dcfg.worker_cpus:g} "
                f"CPU each and the cluster has {have:g} CPUs (lower --workers or "
                "--worker-cpus, or add nodes)") from None
        except self.ray.exceptions.RayTaskError as exc:
            raise DistributedTrainingError(f"a rollout worker failed to set up:\n{exc}") \
                from None

    def replace(self, w: int) -> None:
        """Kill worker ``w`` (if still there) and start a fresh one in its slot."""
        self.ray.kill(self.handles[w], no_restart=True)
        self.handles[w] = self._cls.remote(w)
        self.incarnation[w] += 1
        self.replaced += 1
        if self._setup is not None:
            self.pids[w] = self.ray.get(self.handles[w].configure.remote(*self._setup))
        log.warning("rollout worker %d replaced (incarnation %d, pid %d)", w,
                    self.incarnation[w], self.pids[w])

    def kill(self, w: int) -> None:
        """Kill worker ``w`` as a crash would (tests and fault drills); it is replaced when the
        learner next waits on it."""
        self.ray.kill(self.handles[w], no_restart=True)

    def submit(self, w: int, job: RolloutJob) -> Any:
        return self.handles[w].run.remote(job)

    def shutdown(self) -> None:
        for h in self.handles:
            try:
                self.ray.kill(h, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.handles = []


class _Pending(NamedTuple):
    job: RolloutJob
    worker: int
    incarnation: int
    attempt: int
    submitted: float


@dataclass
class _Round:
    round: int
    version: int
    jobs: list[RolloutJob]
    dispatched: float
    results: dict[str, RolloutResult]
    refs: dict[Any, _Pending]
    initial: bool = False
    """This round carries the initial collection."""
    done_at: float = 0.0


class _AugmentedWriter:
    """Wraps the trainer's MetricsWriter so its per-iteration row also carries the
    distributed columns (the trainer writes the row; this adds to it)."""

    def __init__(self, inner: Any, extra: Callable[[], dict[str, float]]) -> None:
        self.inner, self.extra = inner, extra

    def write(self, step: int, row: dict[str, Any]) -> None:
        self.inner.write(step, {**row, **self.extra()})

    def close(self) -> None:
        self.inner.close()


class DistributedTrainer:
    """Runs a MetaTrainer's (or OfflineTrainer's) iterations with collection on rollout
    workers and logged data from a dataset follower; everything else is the trainer's."""

    def __init__(self, trainer: MetaTrainer, dcfg: DistributedConfig, *,
                 pool: WorkerPool | None = None, follower: Any = None,
                 following: bool = False) -> None:
        self.trainer = trainer
        self.dcfg = dcfg
        self.ray = connect(dcfg)
        self.follower = follower
        self.following = following
        """Keep polling the follower for new episodes (``--follow``)."""
        sim_tasks = getattr(trainer, "sim_tasks", None)
        self.n_sim = len(sim_tasks) if sim_tasks is not None else len(trainer.train_tasks)
        self.collecting = trainer.sim_collection and self.n_sim > 0
        self._own_pool = pool is None
        self.pool = pool
        if self.collecting:
            if self.pool is None:
                self.pool = WorkerPool(dcfg)
            self.pool.configure(trainer.family, trainer.cfg, trainer.train_tasks[:self.n_sim])
        self._rounds: dict[int, _Round] = {}
        self._initial_in_flight = False
        self._weights: tuple[int, Any] | None = None
        self._extra: dict[str, float] = {}
        self.stale_transitions = 0
        self.jobs_resubmitted = 0
        self.steps_by_worker = np.zeros(dcfg.workers, dtype=np.int64)
        self.on_dispatch: Callable[[int], None] | None = None
        """Called after a round is submitted (fault drills kill a worker mid-rollout here)."""
        trainer.metrics = _AugmentedWriter(trainer.metrics, lambda: dict(self._extra))

    # ------------------------------------------------------------------ rounds
    @property
    def iteration(self) -> int:
        return self.trainer.iteration

    def _weights_ref(self) -> tuple[int, Any]:
        v = self.trainer.iteration
        if self._weights is None or self._weights[0] != v:
            self._weights = (v, self.ray.put(acting_state(self.trainer)))
        return self._weights

    def _job_seed(self, r: int, kind: int, group: int, shard: int) -> int:
        words = [self.trainer.cfg.train.seed, r, kind, group, shard, 17]
        return int(np.random.SeedSequence(words).generate_state(1)[0])

    def make_jobs(self, r: int, version: int, weights: Any) -> list[RolloutJob]:
        """Round ``r``'s jobs: the initial collection (once), then each group of distinct
        chosen tasks split across the workers."""
        tc = self.trainer.cfg.train
        n = self.dcfg.workers
        jobs: list[RolloutJob] = []
        if not self.trainer.initial_done and not self._initial_in_flight:
            self._initial_in_flight = True
            for s, part in enumerate(np.array_split(np.arange(self.n_sim), n)):
                if part.size and tc.num_initial_steps > 0:
                    jobs.append(RolloutJob(
                        f"r{r}/initial/s{s}", r, tuple(part.tolist()),
                        (PhaseSpec("initial", tc.num_initial_steps, False),), False,
                        self._job_seed(r, 0, 0, s), version, [weights]))
        chosen = np.random.default_rng([tc.seed, r, 23]).integers(
            self.n_sim, size=tc.num_tasks_sample).tolist()
        phases = (PhaseSpec("prior", tc.num_steps_prior, False),
                  PhaseSpec("posterior", tc.num_steps_posterior, True),
                  PhaseSpec("extra", tc.num_extra_rl_steps_posterior, True))
        for g, group in enumerate(_distinct_groups(chosen)):
            for s in range(n):
                part = tuple(group[s::n])
                if part:
                    jobs.append(RolloutJob(f"r{r}/collect/g{g}/s{s}", r, part, phases, True,
                                           self._job_seed(r, 1, g, s), version, [weights]))
        return jobs

    def _dispatch(self, r: int) -> None:
        version, weights = self._weights_ref()
        initial = not self.trainer.initial_done and not self._initial_in_flight
        rnd = _Round(r, version, self.make_jobs(r, version, weights), time.perf_counter(), {},
                     {}, initial)
        for j, job in enumerate(rnd.jobs):
            self._submit(rnd, job, j % self.pool.size, 0)
        self._rounds[r] = rnd
        if self.on_dispatch is not None:
            self.on_dispatch(r)

    def _submit(self, rnd: _Round, job: RolloutJob, w: int, attempt: int) -> None:
        ref = self.pool.submit(w, job)
        rnd.refs[ref] = _Pending(job, w, self.pool.incarnation[w], attempt, time.perf_counter())

    def _fill_pipeline(self) -> None:
        i = self.trainer.iteration
        last = self.trainer.cfg.train.num_iterations - 1
        for r in range(i, i + self.dcfg.max_staleness + 1):
            if r not in self._rounds and (r == i or r <= last):
                self._dispatch(r)

    def _wait(self, rnd: _Round) -> None:
        ray = self.ray
        timeout = self.dcfg.job_timeout_s
        while rnd.refs:
            ready, _ = ray.wait(list(rnd.refs), num_returns=1,
                                timeout=min(timeout, 5.0) if timeout else None)
            if not ready:
                now = time.perf_counter()
                for p in rnd.refs.values():
                    if now - p.submitted > timeout and \
                            self.pool.incarnation[p.worker] == p.incarnation:
                        log.error("job %s on worker %d ran over %.0f s: treating the worker as "
                                  "dead", p.job.job_id, p.worker, timeout)
                        self.pool.kill(p.worker)
                continue
            for ref in ready:
                p = rnd.refs.pop(ref)
                try:
                    res: RolloutResult = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self._worker_lost(rnd, p, exc)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    log.error("rollout worker %d raised in job %s (round %d):\n%s", p.worker,
                              p.job.job_id, rnd.round, exc)
                    self._drain(rnd)
                    raise DistributedTrainingError(
                        f"rollout worker {p.worker} raised in job {p.job.job_id}: "
                        f"{type(exc.cause).__name__ if exc.cause else 'error'}: "
                        f"{str(exc.cause or exc).splitlines()[0][:300]} (traceback in the "
                        "log above)") from None
                if res.job_id not in rnd.results:  # a job is applied at most once
                    rnd.results[res.job_id] = res
        rnd.done_at = time.perf_counter()

    def _drain(self, rnd: _Round) -> None:
        """Collect (and drop) the round's other outcomes before giving up on it, so their
        errors are not reported a second time as unhandled."""
        for ref in list(rnd.refs):
            try:
                self.ray.get(ref, timeout=10)
            except Exception:  # noqa: BLE001 - the round is abandoned either way
                pass
        rnd.refs.clear()

    def _worker_lost(self, rnd: _Round, p: _Pending, exc: Exception) -> None:
        if p.attempt >= self.dcfg.max_job_restarts:
            raise DistributedTrainingError(
                f"job {p.job.job_id} lost its worker {p.attempt + 1} times (last: "
                f"{type(exc).__name__}); giving up") from None
        log.warning("rollout worker %d died during job %s (%s); its partial data is "
                    "discarded and the job re-run", p.worker, p.job.job_id, type(exc).__name__)
        if self.pool.incarnation[p.worker] == p.incarnation:
            self.pool.replace(p.worker)
        self.jobs_resubmitted += 1
        self._submit(rnd, p.job, p.worker, p.attempt + 1)

    def _apply(self, rnd: _Round) -> dict[str, float]:
        tr = self.trainer
        staleness = tr.iteration - rnd.version
        steps = 0
        per_worker_steps = np.zeros(self.pool.size)
        per_worker_busy = np.zeros(self.pool.size)
        pulls = []
        for job in rnd.jobs:
            res = rnd.results[job.job_id]
            if job.clear_enc:
                for t in job.tasks:
                    tr.enc_buffer.clear(t)
            for rec in res.paths:
                tr.rl_buffer.add_path(rec.slot, rec.path)
                if _ADDS_TO_ENC[rec.phase]:
                    tr.enc_buffer.add_path(rec.slot, rec.path)
            steps += res.env_steps
            per_worker_steps[res.worker] += res.env_steps
            per_worker_busy[res.worker] += res.busy_s
            pulls.append(res.pull_s)
        tr.env_steps += steps
        self.steps_by_worker += per_worker_steps.astype(np.int64)
        if rnd.initial:
            tr.initial_done = True
            self._initial_in_flight = False
        if staleness > 0:
            self.stale_transitions += steps
        wall = max(rnd.done_at - rnd.dispatched, 1e-9)
        row = {"dist/staleness": float(staleness), "dist/round_env_steps": float(steps),
               "dist/env_steps_per_s": steps / wall,
               "dist/weight_pull_s": float(np.mean(pulls)) if pulls else 0.0,
               "dist/workers_replaced": float(self.pool.replaced),
               "dist/jobs_resubmitted": float(self.jobs_resubmitted),
               "dist/stale_transitions": float(self.stale_transitions)}
        for w in range(self.pool.size):
            if per_worker_busy[w] > 0:
                row[f"dist/worker{w}/env_steps_per_s"] = per_worker_steps[w] / per_worker_busy[w]
            row[f"dist/worker{w}/env_steps"] = float(self.steps_by_worker[w])
        return row

    # ------------------------------------------------------------------ the loop
    def _poll_follower(self, block_s: float = 0.0) -> int:
        poll = getattr(self.trainer, "poll_new_episodes", None)
        if poll is None:
            return 0
        return poll(block_s) if block_s else poll()

    def run_iteration(self) -> IterationResult:
        tr = self.trainer
        t0 = time.perf_counter()
        extra: dict[str, float] = {}
        if self.collecting:
            self._fill_pipeline()
            rnd = self._rounds.pop(tr.iteration)
            self._wait(rnd)
            extra.update(self._apply(rnd))
        added = self._poll_follower() if self.following else 0
        if added:
            extra["dist/logged_transitions_added"] = float(added)
        t1 = time.perf_counter()
        extra["time/collect_s"] = t1 - t0
        extra["time/wait_for_data_s"] = t1 - t0
        tr.wall_time += t1 - t0  # the trainer times only its own part of the iteration
        self._extra = extra
        sim = tr.sim_collection
        tr.sim_collection = False  # the trainer's own collection is the workers' job now
        try:
            res = tr.run_iteration()
        finally:
            tr.sim_collection = sim
        return IterationResult(res.iteration, {**res.metrics, **extra})

    def run(self, until_iteration: int | None = None) -> dict[str, float]:
        """Iterations up to ``until_iteration`` (default: the config's count). With a dataset
        follower and no data yet, waits for the first closed episode."""
        tr = self.trainer
        tc = tr.cfg.train
        end = tc.num_iterations if until_iteration is None else until_iteration
        tr._write_run_files()  # noqa: SLF001 - the same run files as MetaTrainer.run
        self._write_cluster_file()
        bar = None
        if tr.progress:
            from tqdm import tqdm

            bar = tqdm(total=end, initial=tr.iteration, desc=f"{tr.family.name} (ray)",
                       unit="iter")
        row: dict[str, float] = {}
        try:
            while tr.iteration < end:
                ready = getattr(tr, "_ready", None)
                if ready is not None and not self.collecting and ready().size == 0:
                    if not self.following:
                        raise ConfigError("no training task has data to train on (see "
                                          "`pearl-robot data check`); add --follow to wait "
                                          "for episodes or --sim to train in the twin")
                    self._poll_follower(block_s=max(tr.offline.poll_s, 0.1))
                    continue
                row = self.run_iteration().metrics
                if bar is not None:
                    post = {"env_steps": int(tr.env_steps),
                            "grad/s": f"{row['charts/grad_steps_per_s']:.1f}"}
                    if "dist/env_steps_per_s" in row:
                        post["steps/s"] = f"{row['dist/env_steps_per_s']:.0f}"
                        post["stale"] = int(row["dist/staleness"])
                    if tr.last_eval:
                        post["test_return"] = f"{tr.last_eval['eval/test_final_return']:.2f}"
                    bar.set_postfix(post)
                    bar.update(1)
        except KeyboardInterrupt:
            log.info("interrupted at iteration %d; the newest checkpoint is on disk",
                     tr.iteration)
        finally:
            if bar is not None:
                bar.close()
            tr.metrics.close()
        if (tr.out_dir / "progress.csv").exists():
            plot_learning_curve(tr.out_dir / "progress.csv", tr.out_dir / "learning_curve.png",
                                title=f"PEARL on {tr.family.name} ({self.dcfg.workers} "
                                f"Ray workers)")
        return row

    def _write_cluster_file(self) -> None:
        import yaml

        info: dict[str, Any] = {"distributed": asdict(self.dcfg),
                                "ray": self.ray.__version__,
                                "cluster_resources": {k: float(v) for k, v in
                                                      self.ray.cluster_resources().items()
                                                      if not k.startswith("node:")}}
        if self.pool is not None:
            info["worker_pids"] = [int(p) for p in self.pool.pids]
        (self.trainer.out_dir / "distributed.yaml").write_text(yaml.safe_dump(info,
                                                                              sort_keys=False))

    def close(self) -> None:
        """Cancel in-flight rounds and, when this trainer made the pool, stop the workers."""
        for rnd in self._rounds.values():
            for ref in rnd.refs:
                try:
                    self.ray.cancel(ref)
                except Exception:  # noqa: BLE001 - already finished
                    pass
        self._rounds.clear()
        self._initial_in_flight = False
        if self._own_pool and self.pool is not None:
            self.pool.shutdown()


# ---------------------------------------------------------------------------- logged data
def make_follower(dcfg: DistributedConfig, data_dirs: Sequence[Path | str],
                  poll_s: float = 1.0) -> Any:
    """A DatasetFollower actor (on ``dcfg.data_node`` when given)."""
    ray = connect(dcfg)
    opts: dict[str, Any] = {"num_cpus": 0}
    if dcfg.data_node:
        opts["resources"] = {f"node:{dcfg.data_node}": 0.001}
    cls = ray.remote(**opts)(DatasetFollower)
    return cls.remote([str(Path(d).resolve()) for d in data_dirs], poll_s)


def make_offline_trainer(cfg: ExperimentConfig, family: TaskFamily, out: str | Path,
                         data_dirs: Sequence[Path | str], follower: Any, *, sim: bool = False,
                         sim_tasks: int | None = None, init: Path | str | None = None,
                         tensorboard: bool = True, progress: bool = True,
                         offline: Any = None) -> Any:
    """An OfflineTrainer whose datasets are read by ``follower`` (possibly on another machine):
    the trainer's own ingest logic, with the reads done remotely and polled without blocking."""
    import ray

    from pearl_robot.train.offline import OfflineTrainer

    class RemoteDataTrainer(OfflineTrainer):
        """OfflineTrainer reading its datasets through a DatasetFollower actor."""

        def _load(self):  # noqa: ANN202 - LoadedDataset
            loaded = ray.get(follower.load.remote())
            for p in loaded.problems:
                if p.severity == "error":
                    log.warning("skipping: %s", p)
            return loaded

        def poll_new_episodes(self, block_s: float = 0.0) -> int:
            """Ingest datasets the follower reported changed; never blocks longer than
            ``block_s`` (0: only look)."""
            if getattr(self, "_pending_poll", None) is None:
                self._pending_poll = follower.wait_for_change.remote(self.offline.poll_s)
            ready, _ = ray.wait([self._pending_poll], timeout=block_s)
            if not ready:
                return 0
            loaded = ray.get(self._pending_poll)
            self._pending_poll = None
            return self._ingest(loaded) if loaded is not None else 0

    trainer = RemoteDataTrainer(cfg, family, out, data_dirs, sim=sim, sim_tasks=sim_tasks,
                                offline=offline, tensorboard=tensorboard, progress=progress)
    if init is not None:
        trainer.load_state(init, weights_only_init=True)
    return trainer


# ---------------------------------------------------------------------------- entry point
def config_from_args(args: Any) -> DistributedConfig:
    """DistributedConfig from the train CLI's flags (checks Ray is installed)."""
    require_ray()
    address = None if args.ray in ("", "local") else args.ray
    d = DistributedConfig()

    def given(name: str, default: Any) -> Any:
        v = getattr(args, name, None)
        return default if v is None else v

    return DistributedConfig(address=address, workers=given("workers", d.workers),
                             max_staleness=given("max_staleness", d.max_staleness),
                             worker_cpus=given("worker_cpus", d.worker_cpus),
                             job_timeout_s=given("job_timeout", d.job_timeout_s),
                             data_node=given("data_node", d.data_node))


def train(cfg: ExperimentConfig, family: TaskFamily, out: str | Path, dcfg: DistributedConfig,
          *, data: Sequence[Path] | None = None, sim: bool = False,
          sim_tasks: int | None = None, follow: bool = False, init: Path | None = None,
          resume: Path | None = None, tensorboard: bool = True, progress: bool = True
          ) -> MetaTrainer:
    """``pearl-robot train --ray``: build the learner, the workers and (with ``data``) the
    follower, run to ``num_iterations``, stop the workers; returns the learner's trainer."""
    connect(dcfg)
    follower = None
    if data:
        from pearl_robot.train.offline import OfflineConfig

        follower = make_follower(dcfg, data)
        trainer = make_offline_trainer(cfg, family, out, data, follower, sim=sim,
                                       sim_tasks=sim_tasks, init=init, tensorboard=tensorboard,
                                       progress=progress, offline=OfflineConfig())
        if not trainer.sim_collection:
            log.info("--data without --sim: the %d rollout workers are not started",
                     dcfg.workers)
    else:
        trainer = MetaTrainer(cfg, family, out, tensorboard=tensorboard, progress=progress)
    if resume is not None:
        trainer.load_state(resume)
    elif init is not None and not data:
        trainer.load_state(init, weights_only_init=True)
    loop = DistributedTrainer(trainer, dcfg, follower=follower, following=follow)
    try:
        loop.run()
    finally:
        loop.close()
    return trainer
