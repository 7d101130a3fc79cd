"""The PEARL meta-training loop (oyster ``MetaRLAlgorithm.train``), seeded and resumable.

Per iteration (pearl-oyster.md section 1.5):

1. iteration 0 only: ``num_initial_steps`` per training task with z ~ prior, to both buffers;
2. ``num_tasks_sample`` training tasks drawn uniformly; for each: clear its encoder buffer, then
   collect ``num_steps_prior`` (z ~ prior, resampled per trajectory; RL + encoder buffers),
   ``num_steps_posterior`` (z ~ q(z|c), c from the encoder buffer, re-inferred every
   ``update_post_train`` trajectories; RL + encoder) and ``num_extra_rl_steps_posterior``
   (same schedule; RL buffer only). The first trajectory of each phase uses a prior z.
3. ``num_train_steps_per_itr`` gradient steps: ``meta_batch`` tasks with replacement, RL batch
   from the RL buffer, context from the encoder buffer;
4. evaluation (train/evaluation.py, reference protocol) every ``eval_every`` iterations;
5. checkpoint every ``checkpoint_every`` iterations (and at the end).

Determinism: every env reset is seeded from (run seed, iteration, phase, task, trajectory), and
the numpy generator, the torch generator and the counters go into the checkpoint, so resuming
from a checkpoint written with ``save_replay_buffers=True`` continues exactly like an
uninterrupted run.

Engineering that matters for speed (docs/performance.md): tasks of a collection phase and of an
evaluation step in lockstep with one batched actor call; float32 replay arrays sampled for the
whole meta-batch with one indexing call per field; the fused Q ensemble; metrics read back once
per gradient step in one tensor.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pearl_robot import __version__
from pearl_robot.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pearl_robot.core.config import ExperimentConfig, to_dict
from pearl_robot.core.networks import EnvSpec
from pearl_robot.core.pearl import TaskLabels, build
from pearl_robot.core.posterior import prior
from pearl_robot.core.replay import ContextDraw, MultiTaskReplay
from pearl_robot.core.types import NumpyRLBatch
from pearl_robot.errors import ConfigError
from pearl_robot.tasks.base import MetaEnv, Task, TaskFamily
from pearl_robot.tasks.interface import EnvInterface
from pearl_robot.train.evaluation import EvalSummary, evaluate_reference, summarize
from pearl_robot.train.metrics import MetricsWriter, plot_learning_curve
from pearl_robot.train.sampler import rollout_batch

log = logging.getLogger(__name__)

_PHASES = {"initial": 0, "prior": 1, "posterior": 2, "extra": 3, "eval": 4}


class IterationResult(NamedTuple):
    """What one call of :meth:`MetaTrainer.run_iteration` produced."""

    iteration: int
    metrics: dict[str, float]


class Relabeled(NamedTuple):
    """A belief-only step's data after task relabelling (:meth:`MetaTrainer.relabel`)."""

    rows: np.ndarray
    """Context rows [T, N, ctx_dim], rewards recomputed where ``moved``."""
    batch: NumpyRLBatch
    """The RL batch, rewards recomputed where ``moved`` (reward reconstruction's targets)."""
    labels: TaskLabels
    """The tasks' labels: the new ones where ``moved``."""
    moved: np.ndarray
    """Which of the tasks were relabelled [T] (bool)."""


def draw_particles(family: TaskFamily, n: int, latent_dim: int, train_labels: np.ndarray,
                   train_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The "particles" refinement's hypotheses of z [n, latent_dim] (float32): the label
    dims of tasks drawn from the family's task distribution (its sampler; without one, the
    training tasks' labels), masked labels and the free dims from N(0, 1), the belief's
    prior. The held-out tasks are never drawn from."""
    out = rng.standard_normal((n, latent_dim))
    P = train_labels.shape[1]
    if P == 0:
        return out.astype(np.float32)
    try:
        values, mask = family.task_labels(family.sample_tasks(n, rng))
    except NotImplementedError:
        pick = rng.integers(len(train_labels), size=n)
        values, mask = train_labels[pick], train_mask[pick]
    out[:, :P] = np.where(mask > 0, values, out[:, :P])
    return out.astype(np.float32)


class MetaTrainer:
    """Owns the networks, the learner, both replay buffers, the envs and the counters."""

    def __init__(self, cfg: ExperimentConfig, family: TaskFamily, out_dir: str | Path, *,
                 train_tasks: Sequence[Task] | None = None, sim_collection: bool = True,
                 tensorboard: bool = True, progress: bool = True) -> None:
        self.cfg = cfg
        self.family = family
        self.out_dir = Path(out_dir)
        """Created by the metrics writer, after every check here: a refused config leaves no
        empty run directory behind."""
        self.progress = progress
        self.sim_collection = sim_collection
        tc = cfg.train
        torch.set_num_threads(tc.torch_threads)
        self.device = torch.device(tc.device)
        tasks = list(train_tasks) if train_tasks is not None else list(family.train_tasks)
        n_val = tc.validation_tasks
        if n_val and train_tasks is not None:
            raise ConfigError("train.validation_tasks applies to training in simulation: "
                              "logged tasks are not the family's tasks that evaluation runs")
        if n_val and n_val >= len(tasks):
            raise ConfigError(f"train.validation_tasks {n_val} leaves no training task of the "
                              f"{len(tasks)}")
        self.train_tasks = tasks[:len(tasks) - n_val]
        self.val_tasks = tasks[len(tasks) - n_val:]
        """Training tasks set aside to pick the checkpoint (``TrainConfig.validation_tasks``)."""
        self.best_val = -math.inf
        """The best validation score so far (the one ``checkpoints/best.pt`` holds)."""
        self.eval_tasks = family.eval_tasks
        env0 = family.make_env(seed=tc.seed)
        self.spec = EnvSpec.from_env(env0)
        self.env_interface = EnvInterface.from_env(env0)
        """What the bundle contract will say about the env (the checkpoint's ``env_spec``)."""
        self.nets, self.learner = build(cfg.pearl, self.spec, self.device, tc.seed)
        labels, mask = family.task_labels(self.train_tasks)
        self.train_labels = labels.astype(np.float32)
        """Normalized privileged parameters of each training task [n_train, P] (P = 0 when
        the family exposes none)."""
        self.train_label_mask = mask.astype(np.float32)
        pc = cfg.pearl
        if pc.inference == "privileged" and (labels.shape[1] == 0 or mask.min() < 1):
            raise ConfigError(f"pearl.inference 'privileged' needs every training task's "
                              f"labels; {family.name} has {labels.shape[1]} (some masked: "
                              f"{bool(labels.size and mask.min() < 1)})")
        if pc.inference in ("pooled", "privileged") and labels.shape[1] > pc.latent_dim:
            raise ConfigError(f"pearl.latent_dim must be >= the {labels.shape[1]} task labels "
                              f"of {family.name} for inference {pc.inference!r}, got "
                              f"{pc.latent_dim}")
        if pc.task_relabeling != "off":
            if not family.supports_relabeling:
                raise ConfigError(f"pearl.task_relabeling {pc.task_relabeling!r}: {family.name} "
                                  f"cannot recompute rewards under other tasks (its labels "
                                  f"change the dynamics, or it has none); use 'off'")
            if labels.shape[1] == 0 or mask.min() < 1:
                raise ConfigError("pearl.task_relabeling needs every training task's labels "
                                  "(relabelling rescores transitions under known tasks)")
            if pc.task_relabeling == "hindsight" and \
                    type(family).hindsight_labels is TaskFamily.hindsight_labels:
                raise ConfigError(f"pearl.task_relabeling 'hindsight': {family.name} has no "
                                  f"hindsight goals (its labels are not a goal a transition "
                                  f"reaches); use 'family' or 'off'")
        self.agent = self.learner.agent
        if pc.refinement == "particles":
            parts = draw_particles(family, pc.num_particles, pc.latent_dim, self.train_labels,
                                   self.train_label_mask, np.random.default_rng([tc.seed, 7]))
            with torch.no_grad():
                self.nets.particles.copy_(torch.from_numpy(parts))
        n_train = len(self.train_tasks)
        self.rl_buffer = MultiTaskReplay(n_train, tc.replay_capacity, self.spec.obs_dim,
                                         self.spec.action_dim)
        self.enc_buffer = MultiTaskReplay(n_train, tc.replay_capacity, self.spec.obs_dim,
                                          self.spec.action_dim)
        n_envs = min(32, max(tc.num_tasks_sample, len(self.eval_tasks), 1))
        self.envs: list[MetaEnv] = [env0] + [family.make_env(seed=tc.seed + i)
                                             for i in range(1, n_envs)]
        self.rng = np.random.default_rng(tc.seed)
        self.iteration = 0
        self.env_steps = 0
        self.grad_steps = 0
        self.initial_done = False
        self.wall_time = 0.0
        self.metrics = MetricsWriter(self.out_dir, tensorboard=tensorboard)
        self.last_eval: dict[str, float] = {}

    # ------------------------------------------------------------------ collection
    def _seed(self, phase: str, task: int, traj: int) -> int:
        words = [self.cfg.train.seed, self.iteration, _PHASES[phase], task, traj]
        return int(np.random.SeedSequence(words).generate_state(1)[0])

    def collect(self, tasks: Sequence[int], num_steps: int, *, update_posterior: bool,
                add_to_enc: bool, phase: str) -> int:
        """Collect at least ``num_steps`` per task (whole trajectories) for distinct
        ``tasks`` (indices into the training tasks), all tasks in lockstep."""
        if num_steps <= 0 or not tasks:
            return 0
        tc, pc = self.cfg.train, self.cfg.pearl
        k = len(tasks)
        if len(set(tasks)) != k:
            raise ValueError("collect() needs distinct tasks; split duplicates into groups")
        total = 0
        for c0 in range(0, k, len(self.envs)):
            chunk = list(tasks[c0:c0 + len(self.envs)])
            envs = self.envs[:len(chunk)]
            for env, t in zip(envs, chunk):
                env.set_task(self.train_tasks[t])
            counts = np.zeros(len(chunk), dtype=np.int64)
            belief = prior((len(chunk),), pc.latent_dim, self.device)
            if pc.inference == "privileged":
                belief = self.agent.infer_posterior(
                    torch.zeros(len(chunk), 0, 1), labels=self.task_labels(chunk).values)
            z = self.agent.sample_z(belief)
            active = list(range(len(chunk)))
            traj = 0
            while active:
                trajs = rollout_batch([envs[i] for i in active], self.agent, z[active],
                                      tc.max_path_length, False,
                                      [self._seed(phase, chunk[i], traj) for i in active],
                                      self.family.context_reward_key)
                for i, tr in zip(active, trajs):
                    self.rl_buffer.add_path(chunk[i], tr.path)
                    if add_to_enc:
                        self.enc_buffer.add_path(chunk[i], tr.path)
                    counts[i] += len(tr.path.obs)
                traj += 1
                active = [i for i in active if counts[i] < num_steps]
                if update_posterior and traj % tc.update_post_train == 0:
                    belief = self._posterior_from_enc(chunk, belief)
                z = self.agent.sample_z(belief)
            total += int(counts.sum())
        self.env_steps += total
        return total

    @torch.inference_mode()
    def _posterior_from_enc(self, tasks: list[int], current):  # noqa: ANN001, ANN202
        has = self.enc_buffer.sizes[tasks] > 0
        if not has.any():
            return current
        pc = self.cfg.pearl
        ctx = self.enc_buffer.sample_context(np.asarray(tasks)[has], pc.embedding_batch_size,
                                             self.rng, pc.use_next_obs_in_context,
                                             pc.context_sampling == "trajectories")
        lab = self.task_labels(np.asarray(tasks)[has])
        post = self.agent.infer_posterior(self.agent.context_to_tensor(ctx),
                                          labels=lab.values if lab is not None else None)
        mean, var = current.mean.clone(), current.var.clone()
        idx = torch.as_tensor(np.flatnonzero(has))
        mean[idx], var[idx] = post.mean, post.var
        return type(current)(mean, var)

    def task_labels(self, tasks: Sequence[int] | np.ndarray) -> TaskLabels | None:
        """The privileged labels of training tasks (indices), or None when there are none."""
        if self.train_labels.shape[1] == 0:
            return None
        idx = np.asarray(tasks, dtype=np.int64)
        return TaskLabels(torch.from_numpy(self.train_labels[idx]).to(self.device),
                          torch.from_numpy(self.train_label_mask[idx]).to(self.device))

    def context_mask(self, n_tasks: int) -> torch.Tensor | None:
        """Training-context row mask for ``context_lengths: uniform`` (a length drawn per
        task from 1..embedding_batch_size), None for fixed-length contexts."""
        pc = self.cfg.pearl
        if pc.context_lengths == "fixed":
            return None
        n = pc.embedding_batch_size
        lengths = self.rng.integers(1, n + 1, size=n_tasks)
        mask = (np.arange(n)[None, :] < lengths[:, None]).astype(np.float32)
        return torch.from_numpy(mask).to(self.device)

    # ------------------------------------------------------------------ training
    def trainable_tasks(self) -> np.ndarray:
        """Indices of the training tasks a gradient step may draw: all of them here; retraining
        from logs narrows it to the tasks that have data (train/offline.py)."""
        return np.arange(len(self.train_tasks))

    def train_steps(self, n: int) -> dict[str, float]:
        """``n`` gradient steps; returns the mean of each metric."""
        pc = self.cfg.pearl
        pool = self.trainable_tasks()
        if pool.size == 0:
            raise ConfigError("no training task has data to train on yet")
        sums: dict[str, float] = {}
        it = range(n)
        if self.progress and n >= 200:
            from tqdm import tqdm

            it = tqdm(it, desc=f"iter {self.iteration} grad steps", leave=False, unit="step",
                      mininterval=1.0)
        for _ in it:
            tasks = pool[self.rng.integers(pool.size, size=pc.meta_batch)]
            batch = self.rl_buffer.sample_rl(tasks, pc.batch_size, self.rng)
            ctx = self.enc_buffer.sample_context(tasks, pc.embedding_batch_size, self.rng,
                                                 pc.use_next_obs_in_context,
                                                 pc.context_sampling == "trajectories")
            extra: dict[str, Any] = {}
            mask = self.context_mask(len(tasks))
            if mask is not None:
                extra["context_mask"] = mask
            if pc.inference != "pog":  # PEARL never sees the labels
                extra["labels"] = self.task_labels(tasks)
            tbatch = batch.to_torch(self.device)
            m = self.learner.update(tbatch, torch.from_numpy(ctx).to(self.device), **extra)
            for _ in range(pc.inference_updates - 1 if pc.inference == "pooled" else 0):
                draw = self.enc_buffer.sample_context_draw(
                    tasks, pc.embedding_batch_size, self.rng, pc.use_next_obs_in_context,
                    pc.context_sampling == "trajectories")
                if pc.task_relabeling == "off":
                    ctx, ibatch, labels = draw.rows, tbatch, self.task_labels(tasks)
                else:
                    rel = self.relabel(tasks, draw, batch, pool)
                    ctx, labels = rel.rows, rel.labels
                    ibatch = rel.batch.to_torch(self.device)
                self.learner.update_inference(ibatch, torch.from_numpy(ctx).to(self.device),
                                              self.context_mask(len(tasks)), labels)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            self.grad_steps += 1
        return {k: v / max(n, 1) for k, v in sums.items()}

    def relabel(self, tasks: np.ndarray, draw: ContextDraw, batch: NumpyRLBatch,
                pool: np.ndarray) -> Relabeled:
        """Part of a belief-only step's tasks (``relabel_fraction``) moved to other tasks
        (``PearlConfig.task_relabeling``): new labels, and the context's and the RL batch's
        rewards recomputed under them by the family. The rest keep their real data."""
        pc = self.cfg.pearl
        labels = self.train_labels[tasks].copy()
        mask = self.train_label_mask[tasks].copy()
        pick = self.rng.random(len(tasks)) < pc.relabel_fraction
        rows, rewards = draw.rows, batch.rewards
        k = int(pick.sum())
        if k:
            if pc.task_relabeling == "mix":
                other = pool[self.rng.integers(pool.size, size=k)]
                lam = self.rng.random((k, 1)).astype(np.float32)
                new = lam * labels[pick] + (1.0 - lam) * self.train_labels[other]
            elif pc.task_relabeling == "hindsight":
                new = self.family.hindsight_labels(draw.next_obs[pick], self.rng)
            else:
                new = self.family.task_labels(self.family.sample_tasks(k, self.rng))[0]
            rows, rewards = rows.copy(), rewards.copy()
            ctx_r = self.family.relabel_rewards(new, draw.next_obs[pick])
            rows[pick, :, draw.layout.slices["reward"].start] = ctx_r.context_reward
            rewards[pick, :, 0] = self.family.relabel_rewards(new, batch.next_obs[pick]).reward
            labels[pick] = new
        lab = TaskLabels(torch.from_numpy(labels.astype(np.float32)).to(self.device),
                         torch.from_numpy(mask).to(self.device))
        return Relabeled(rows, batch._replace(rewards=rewards), lab, pick)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        tc = self.cfg.train
        fam = self.family
        common = dict(num_steps=tc.num_steps_per_eval, max_path_length=tc.max_path_length,
                      num_exp_traj=tc.num_exp_traj_eval, repeats=tc.num_evals)
        test_idx = fam.eval_indices
        n_tr = tc.num_eval_train_tasks if tc.num_eval_train_tasks is not None else len(test_idx)
        eval_rng = np.random.default_rng([tc.seed, self.iteration, 99])
        held = {t.index for t in self.val_tasks}
        pool = [i for i in fam.train_indices if i not in held]
        train_idx = sorted(eval_rng.choice(pool, size=min(n_tr, len(pool)), replace=False)
                           .tolist()) if n_tr > 0 else []
        seed = self._seed("eval", 0, 0)
        test = summarize(evaluate_reference(self.agent, fam, test_idx, self.envs, seed=seed,
                                            **common), tc.num_exp_traj_eval)
        row: dict[str, float] = {
            "eval/test_final_return": test.final_return,
            "eval/test_first_return": test.first_return,
            "eval/test_success": test.final_success,
            "eval/test_normalized": test.final_normalized,
        }
        for j, r in enumerate(test.online_returns):
            row[f"eval/test_return_traj{j}"] = r
        if train_idx:
            tr = summarize(evaluate_reference(self.agent, fam, train_idx, self.envs,
                                              seed=seed + 1, **common), tc.num_exp_traj_eval)
            row["eval/train_final_return"] = tr.final_return
        if self.val_tasks:
            val = summarize(evaluate_reference(self.agent, fam, [t.index for t in self.val_tasks],
                                               self.envs, seed=seed + 2, **common),
                            tc.num_exp_traj_eval)
            row["eval/val_final_return"] = val.final_return
            row["eval/val_success"] = val.final_success
            row["eval/val_normalized"] = val.final_normalized
            row["eval/val_score"] = _validation_score(val)
        return row

    # ------------------------------------------------------------------ the loop
    def run_iteration(self) -> IterationResult:
        tc = self.cfg.train
        t0 = time.perf_counter()
        n_train = len(self.train_tasks)
        if self.sim_collection:
            if not self.initial_done:
                self.collect(list(range(n_train)), tc.num_initial_steps,
                             update_posterior=False, add_to_enc=True, phase="initial")
                self.initial_done = True
            chosen = self.rng.integers(n_train, size=tc.num_tasks_sample).tolist()
            for group in _distinct_groups(chosen):
                for t in group:
                    self.enc_buffer.clear(t)
                self.collect(group, tc.num_steps_prior, update_posterior=False,
                             add_to_enc=True, phase="prior")
                self.collect(group, tc.num_steps_posterior, update_posterior=True,
                             add_to_enc=True, phase="posterior")
                self.collect(group, tc.num_extra_rl_steps_posterior, update_posterior=True,
                             add_to_enc=False, phase="extra")
        t1 = time.perf_counter()
        train_metrics = self.train_steps(tc.num_train_steps_per_itr)
        t2 = time.perf_counter()
        last = self.iteration + 1 >= tc.num_iterations
        eval_row: dict[str, float] = {}
        if (self.iteration + 1) % tc.eval_every == 0 or last:
            eval_row = self.evaluate()
            self.last_eval = eval_row
            if self.val_tasks:
                eval_row["eval/val_best"] = max(self.best_val, eval_row["eval/val_score"])
        t3 = time.perf_counter()
        self.wall_time += t3 - t0
        row = {"iteration": float(self.iteration), "charts/env_steps": float(self.env_steps),
               "charts/grad_steps": float(self.grad_steps),
               "charts/wall_time_s": self.wall_time,
               "time/collect_s": t1 - t0, "time/train_s": t2 - t1, "time/eval_s": t3 - t2,
               "charts/grad_steps_per_s": tc.num_train_steps_per_itr / max(t2 - t1, 1e-9),
               **train_metrics, **eval_row}
        self.metrics.write(self.grad_steps, row)
        self.iteration += 1
        if eval_row.get("eval/val_score", -math.inf) > self.best_val:
            self.best_val = eval_row["eval/val_score"]
            self.save(self.out_dir / "checkpoints" / "best.pt")
        if self.iteration % tc.checkpoint_every == 0 or last:
            self.save(self.out_dir / "checkpoints" / "latest.pt")
        return IterationResult(self.iteration - 1, row)

    def run(self, until_iteration: int | None = None) -> dict[str, float]:
        """Run iterations up to ``until_iteration`` (default: the config's count)."""
        tc = self.cfg.train
        end = tc.num_iterations if until_iteration is None else until_iteration
        self._write_run_files()
        iters = range(self.iteration, end)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=end, initial=self.iteration, desc=self.family.name, unit="iter")
        row: dict[str, float] = {}
        try:
            for _ in iters:
                row = self.run_iteration().metrics
                if bar is not None:
                    post = {"env_steps": int(self.env_steps),
                            "grad/s": f"{row['charts/grad_steps_per_s']:.1f}"}
                    if self.last_eval:
                        post["test_return"] = f"{self.last_eval['eval/test_final_return']:.2f}"
                        if math.isfinite(self.last_eval.get("eval/test_normalized", math.nan)):
                            post["score"] = f"{self.last_eval['eval/test_normalized']:.2f}"
                    bar.set_postfix(post)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            self.metrics.close()
        if (self.out_dir / "progress.csv").exists():
            plot_learning_curve(self.out_dir / "progress.csv",
                                self.out_dir / "learning_curve.png",
                                title=f"PEARL on {self.family.name}")
        return row

    def _write_run_files(self) -> None:
        import yaml

        (self.out_dir / "config.yaml").write_text(yaml.safe_dump(
            {"pearl": to_dict(self.cfg.pearl), "train": to_dict(self.cfg.train)},
            sort_keys=False))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_payload(self) -> dict[str, Any]:
        tc = self.cfg.train
        payload: dict[str, Any] = {
            "config": {"pearl": to_dict(self.cfg.pearl), "train": to_dict(tc)},
            "env_spec": self.env_interface.to_json(),
            "family": {**self.family.describe(),
                       "train_tasks": [{"index": t.index, "params": t.params}
                                       for t in self.train_tasks],
                       "validation_tasks": [{"index": t.index, "params": t.params}
                                            for t in self.val_tasks]},
            "networks": self.nets.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.learner.optimizers().items()},
            "trainer": {
                "iteration": self.iteration, "env_steps": self.env_steps,
                "grad_steps": self.grad_steps, "initial_done": self.initial_done,
                "wall_time": self.wall_time, "num_updates": self.learner.num_updates,
                "best_val": self.best_val,
                "numpy_rng": json.dumps(self.rng.bit_generator.state),
                "torch_rng": self.learner.generator.get_state(),
                "last_eval": dict(self.last_eval),
            },
            "provenance": {"pearl_robot": __version__, "torch": str(torch.__version__),
                           "numpy": np.__version__, "python": platform.python_version(),
                           "host": platform.node(), "saved_unix": time.time()},
        }
        if tc.save_replay_buffers:
            payload["replay"] = {
                name: {k: torch.from_numpy(np.ascontiguousarray(v))
                       for k, v in buf.state_dict().items()}
                for name, buf in (("rl", self.rl_buffer), ("enc", self.enc_buffer))}
        return payload

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, self.checkpoint_payload())

    def load_state(self, path: str | Path, *, weights_only_init: bool = False) -> None:
        """Resume from a checkpoint (or, with ``weights_only_init``, only warm-start the
        networks, as ``--init`` does for retraining)."""
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.env_spec.obs_dim != self.spec.obs_dim or \
                ckpt.env_spec.action_dim != self.spec.action_dim:
            raise CheckpointError(
                f"{path}: checkpoint is for obs/action dims {ckpt.env_spec.obs_dim}/"
                f"{ckpt.env_spec.action_dim}, this task family has {self.spec.obs_dim}/"
                f"{self.spec.action_dim}")
        try:
            self.nets.load_state_dict(ckpt.networks)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: network shapes differ from this config "
                                  f"({str(exc).splitlines()[0][:200]})") from exc
        if weights_only_init:
            return
        for name, opt in self.learner.optimizers().items():
            if name in ckpt.optimizers:
                opt.load_state_dict(ckpt.optimizers[name])
        tr = ckpt.trainer
        self.iteration = int(tr["iteration"])
        self.env_steps = int(tr["env_steps"])
        self.grad_steps = int(tr["grad_steps"])
        self.initial_done = bool(tr["initial_done"])
        self.wall_time = float(tr.get("wall_time", 0.0))
        self.learner.num_updates = int(tr.get("num_updates", self.grad_steps))
        self.rng.bit_generator.state = json.loads(tr["numpy_rng"])
        self.learner.generator.set_state(tr["torch_rng"])
        self.last_eval = dict(tr.get("last_eval", {}))
        self.best_val = float(tr.get("best_val", -math.inf))
        if ckpt.replay is not None:
            for name, buf in (("rl", self.rl_buffer), ("enc", self.enc_buffer)):
                buf.load_state_dict({k: v.numpy() for k, v in ckpt.replay[name].items()})
        elif self.sim_collection:
            log.warning("checkpoint %s has no replay buffers: resuming with empty buffers and "
                        "re-collecting the initial data (not an exact resume)", path)
            self.initial_done = False


def _validation_score(summary: EvalSummary) -> float:
    """What picks ``best.pt``: the oracle-normalized return where the family has baselines,
    else the success rate, else the final return (never nan, so a comparison decides)."""
    for value in (summary.final_normalized, summary.final_success, summary.final_return):
        if math.isfinite(value):
            return float(value)
    return -math.inf


def _distinct_groups(tasks: list[int]) -> list[list[int]]:
    """Split a list with repeats into consecutive groups of distinct tasks, preserving order
    (a repeated task's second collection must see its first one's data)."""
    groups: list[list[int]] = []
    for t in tasks:
        if not groups or t in groups[-1]:
            groups.append([t])
        else:
            groups[-1].append(t)
    return groups
