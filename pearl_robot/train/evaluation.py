"""Adaptation on held-out tasks: the reference protocol and the robot's per-step online mode.

Reference protocol (oyster ``collect_paths``; pearl-oyster.md section 1.6), per task and repeat:
the belief is reset to the prior; trajectories are rolled out with deterministic actions while
the online context accumulates; after trajectory k >= ``num_exp_traj_eval`` the posterior is
re-inferred from all context so far; z is re-sampled from the current belief after every
trajectory. The reported return is the **last** trajectory's; every trajectory's return is kept
("online" returns). The number of trajectories is ceil(num_steps_per_eval / horizon).

Online mode (what the robot runs): the belief is updated after **every** transition with running
precision sums (O(latent) per step, as the runtime does); z follows a schedule: ``"mean"`` uses
the posterior mean at every step, ``"sample"`` draws z from the posterior at each episode start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from pearl_robot.core.inference import OnlineBelief, StepBelief, recommended_window
from pearl_robot.core.pearl import PearlAgent
from pearl_robot.core.posterior import prior
from pearl_robot.core.replay import context_from_path
from pearl_robot.core.types import Posterior
from pearl_robot.tasks.base import MetaEnv, TaskFamily
from pearl_robot.train.sampler import rollout_batch


class TaskEval(NamedTuple):
    """Every trajectory of one task's evaluation, arrays [repeats, trajectories]."""

    task_index: int
    returns: np.ndarray
    successes: np.ndarray
    start_obs: np.ndarray
    """[repeats, trajectories, obs_dim]"""
    baselines: np.ndarray | None
    """[2, repeats, trajectories]: returns of the still policy and of the oracle from the same
    start states, where the family defines them (point-robot)."""


class EvalSummary(NamedTuple):
    """Means over tasks (and repeats) of a list of TaskEval."""

    final_return: float
    """Mean return of the last trajectory (the reference's AverageReturn)."""
    first_return: float
    """Mean return of the first trajectory (prior z: before adaptation)."""
    online_returns: list[float]
    """Mean return per trajectory index."""
    final_success: float
    """Fraction of (task, repeat) with success in any post-exploration trajectory."""
    final_normalized: float
    """Oracle-normalized return of the last trajectory, (R - R_still) / (R_oracle - R_still)
    with each term summed over all tasks and repeats (nan when undefined). Sums, not a mean of
    per-trajectory ratios: a start next to the goal would make its ratio explode."""


def summarize(evals: Sequence[TaskEval], num_exp_traj: int) -> EvalSummary:
    rets = np.stack([e.returns for e in evals])  # [tasks, repeats, traj]
    succ = np.stack([e.successes for e in evals])
    post = succ[:, :, num_exp_traj:] if succ.shape[2] > num_exp_traj else succ[:, :, -1:]
    final_norm = math.nan
    if all(e.baselines is not None for e in evals):
        r = sum(float(e.returns[:, -1].sum()) for e in evals)
        still = sum(float(e.baselines[0, :, -1].sum()) for e in evals)
        oracle = sum(float(e.baselines[1, :, -1].sum()) for e in evals)
        final_norm = (r - still) / max(oracle - still, 1e-9)
    return EvalSummary(float(rets[:, :, -1].mean()), float(rets[:, :, 0].mean()),
                       rets.mean(axis=(0, 1)).tolist(), float(post.any(axis=2).mean()),
                       final_norm)


def _baselines(family: TaskFamily, task_index: int, returns: np.ndarray,
               starts: np.ndarray) -> np.ndarray | None:
    baseline = getattr(family, "baseline_returns", None)
    task = family.tasks[task_index]
    if baseline is None or baseline(task, starts[(0,) * returns.ndim]) is None:
        return None
    out = np.empty((2, *returns.shape))
    for idx in np.ndindex(returns.shape):
        out[(slice(None), *idx)] = baseline(task, starts[idx])
    return out


def _labels(agent: PearlAgent, family: TaskFamily, chunk: Sequence[int]
            ) -> torch.Tensor | None:
    """The true normalized task parameters, for the "privileged" reference only."""
    if agent.cfg.inference != "privileged":
        return None
    values, _mask = family.task_labels([family.tasks[t] for t in chunk])
    return torch.as_tensor(values, dtype=torch.float32, device=agent.device)


def _prior_belief(agent: PearlAgent, family: TaskFamily, chunk: Sequence[int]) -> Posterior:
    labels = _labels(agent, family, chunk)
    if labels is not None:
        return agent.infer_posterior(torch.zeros(len(chunk), 0, 1), labels=labels)
    return prior((len(chunk),), agent.cfg.latent_dim, agent.device)


def _posterior_from_rows(agent: PearlAgent, rows: list[np.ndarray],
                         labels: torch.Tensor | None = None) -> Posterior:
    """q(z | c) for each task's accumulated context (rows may differ in length)."""
    lengths = {len(r) for r in rows}
    if len(lengths) == 1:
        return agent.infer_posterior(agent.context_to_tensor(np.stack(rows)), labels=labels)
    posts = [agent.infer_posterior(agent.context_to_tensor(r[None]),
                                   labels=None if labels is None else labels[i:i + 1])
             for i, r in enumerate(rows)]
    return Posterior(torch.cat([p.mean for p in posts]), torch.cat([p.var for p in posts]))


@torch.inference_mode()
def evaluate_reference(agent: PearlAgent, family: TaskFamily, task_indices: Sequence[int],
                       envs: Sequence[MetaEnv], *, num_steps: int, max_path_length: int,
                       num_exp_traj: int, repeats: int, seed: int,
                       deterministic: bool = True) -> list[TaskEval]:
    """The reference adaptation protocol on ``task_indices``, len(envs) tasks at a time."""
    horizon = min(max_path_length, envs[0].max_episode_steps)
    n_traj = max(1, math.ceil(num_steps / horizon))
    use_next = agent.cfg.use_next_obs_in_context
    results: list[TaskEval] = []
    for c0 in range(0, len(task_indices), len(envs)):
        chunk = list(task_indices[c0:c0 + len(envs)])
        k = len(chunk)
        batch_envs = list(envs[:k])
        for env, t in zip(batch_envs, chunk):
            env.set_task(family.tasks[t])
        rets = np.zeros((k, repeats, n_traj))
        succ = np.zeros((k, repeats, n_traj), dtype=bool)
        starts = np.zeros((k, repeats, n_traj, batch_envs[0].obs_dim))
        labels = _labels(agent, family, chunk)
        for rep in range(repeats):
            belief = _prior_belief(agent, family, chunk)
            rows: list[list[np.ndarray]] = [[] for _ in range(k)]
            # "particles": the belief is the weighted particle set (uniform: the prior);
            # every trajectory's rows add to the log-weights, used once exploration is over
            log_w = torch.zeros(k, agent.cfg.num_particles, device=agent.device) \
                if agent.cfg.refinement == "particles" else None
            for j in range(n_traj):
                if log_w is None:
                    z = agent.sample_z(belief)
                else:
                    z = agent.sample_particle_z(log_w if j >= num_exp_traj
                                                else torch.zeros_like(log_w))
                seeds = [_seed(seed, t, rep, j) for t in chunk]
                trajs = rollout_batch(batch_envs, agent, z, horizon, deterministic, seeds,
                                      family.context_reward_key, family.success_key)
                for i, tr in enumerate(trajs):
                    rets[i, rep, j] = tr.env_return
                    succ[i, rep, j] = tr.success
                    starts[i, rep, j] = tr.start_obs
                    rows[i].append(context_from_path(tr.path, use_next))
                if log_w is not None:
                    _add_particle_evidence(agent, log_w, [r[-1] for r in rows])
                    continue
                if j + 1 >= num_exp_traj:
                    belief = _posterior_from_rows(agent, [np.concatenate(r) for r in rows],
                                                  labels)
        for i, t in enumerate(chunk):
            results.append(TaskEval(t, rets[i], succ[i], starts[i],
                                    _baselines(family, t, rets[i], starts[i])))
    return results


def _add_particle_evidence(agent: PearlAgent, log_w: torch.Tensor,
                           new_rows: list[np.ndarray]) -> None:
    """Add each task's newest trajectory ([n_i, width] rows) to its particle log-weights
    [k, K] in place: one batched pass when the trajectories have one length, else per task."""
    if len({len(r) for r in new_rows}) == 1:
        log_w += agent.particle_log_likelihood(agent.context_to_tensor(np.stack(new_rows)))
        return
    for i, r in enumerate(new_rows):
        log_w[i] += agent.particle_log_likelihood(agent.context_to_tensor(r[None]))[0]


class _OnlineBeliefs:
    """The robot's belief step for a lockstep batch of tasks (``core.inference``): the
    product-of-Gaussians running sums for "pog", the exported step module for "pooled", the
    true labels for "privileged". Same window as the runtime's default."""

    def __init__(self, agent: PearlAgent, family: TaskFamily, chunk: Sequence[int],
                 window: int) -> None:
        cfg = agent.cfg
        self.agent = agent
        self.k = len(chunk)
        self.mode = cfg.inference
        self.fixed: Posterior | None = None
        if self.mode == "privileged":
            self.fixed = _prior_belief(agent, family, chunk)
        elif self.mode == "pooled":
            enc = agent.nets.encoder
            self.step = StepBelief(agent.step_function(), cfg.latent_dim, enc.window,
                                   enc.features, batch=self.k)
        else:
            self.pog = [OnlineBelief(cfg.latent_dim, window) for _ in range(self.k)]
        self.reset()

    def reset(self) -> None:
        if self.mode == "pooled":
            self.step.reset()
        elif self.mode == "pog":
            for b in self.pog:
                b.reset()

    def add(self, rows: np.ndarray, live: np.ndarray) -> None:
        """One transition per task ([k, width] replay-layout rows); ``live`` False: skip."""
        if self.mode == "pooled":
            self.step.add_rows(rows, live)
        elif self.mode == "pog":
            f = self.agent.encode(self.agent.context_to_tensor(rows[:, None]))
            mu, var = f.mean[:, 0].cpu().numpy(), f.var[:, 0].cpu().numpy()
            for i in np.flatnonzero(live):
                self.pog[i].add(mu[i], var[i])

    def posterior(self) -> Posterior:
        if self.fixed is not None:
            return self.fixed
        if self.mode == "pooled":
            mean, var = self.step.mean.reshape(self.k, -1), self.step.var.reshape(self.k, -1)
        else:
            mean = np.stack([b.mean for b in self.pog])
            var = np.stack([b.var for b in self.pog])
            if not self.agent.cfg.use_information_bottleneck:
                # point-estimate encoder (var 1 per factor): z is the context mean
                var = np.zeros_like(var)
        dev = self.agent.device
        return Posterior(torch.as_tensor(mean, dtype=torch.float32, device=dev),
                         torch.as_tensor(var, dtype=torch.float32, device=dev))


@torch.inference_mode()
def evaluate_online(agent: PearlAgent, family: TaskFamily, task_indices: Sequence[int],
                    envs: Sequence[MetaEnv], *, num_episodes: int, max_path_length: int,
                    repeats: int, seed: int, z_schedule: str = "mean",
                    deterministic: bool = True, window: int | None = None) -> list[TaskEval]:
    """Per-step belief updates with the robot's belief step and window (``window`` None:
    the runtime's default for this model, ``core.inference.recommended_window``)."""
    if z_schedule not in ("mean", "sample"):
        raise ValueError(f"z_schedule must be 'mean' or 'sample', got {z_schedule!r}")
    cfg = agent.cfg
    layout = agent.nets.layout
    if window is None:
        window = recommended_window(cfg.embedding_batch_size, num_episodes * max_path_length)
    results: list[TaskEval] = []
    for c0 in range(0, len(task_indices), len(envs)):
        chunk = list(task_indices[c0:c0 + len(envs)])
        k = len(chunk)
        batch_envs = list(envs[:k])
        for env, t in zip(batch_envs, chunk):
            env.set_task(family.tasks[t])
        horizon = min(max_path_length, batch_envs[0].max_episode_steps)
        rets = np.zeros((k, repeats, num_episodes))
        succ = np.zeros((k, repeats, num_episodes), dtype=bool)
        starts = np.zeros((k, repeats, num_episodes, batch_envs[0].obs_dim))
        beliefs = _OnlineBeliefs(agent, family, chunk, window)
        for rep in range(repeats):
            beliefs.reset()
            for ep in range(num_episodes):
                obs = np.stack([env.reset(seed=_seed(seed, t, rep, ep))[0]
                                for env, t in zip(batch_envs, chunk)])
                starts[:, rep, ep] = obs
                z = agent.sample_z(beliefs.posterior()) if z_schedule == "sample" \
                    else _mean_input(agent, beliefs.posterior())
                done = np.zeros(k, dtype=bool)
                for _ in range(horizon):
                    phys, norm = agent.act(obs, z, deterministic=deterministic)
                    nxt, rew = obs.copy(), np.zeros(k)
                    was_done = done.copy()
                    for i, env in enumerate(batch_envs):
                        if was_done[i]:
                            continue
                        st = env.step(phys[i])
                        rew[i] = st.info[family.context_reward_key] \
                            if family.context_reward_key else st.reward
                        rets[i, rep, ep] += st.reward
                        if family.success_key and st.info.get(family.success_key):
                            succ[i, rep, ep] = True
                        nxt[i] = st.obs
                        done[i] = st.terminated or st.truncated
                    beliefs.add(layout.rows(obs, norm, rew, nxt), ~was_done)
                    obs = nxt
                    if z_schedule == "mean":
                        z = _mean_input(agent, beliefs.posterior())
                    if done.all():
                        break
        for i, t in enumerate(chunk):
            results.append(TaskEval(t, rets[i], succ[i], starts[i],
                                    _baselines(family, t, rets[i], starts[i])))
    return results


def _mean_input(agent: PearlAgent, post: Posterior) -> torch.Tensor:
    """The actor's latent input for the belief mean: z = mean for a sampling policy; what
    ``sample_z`` gives otherwise (the belief itself, or zeros without task inference)."""
    if agent.cfg.task_inference and agent.cfg.policy_input == "sample":
        return post.mean
    return agent.sample_z(post)


def _seed(base: int, task: int, repeat: int, traj: int) -> int:
    return int(np.random.SeedSequence([base, task, repeat, traj]).generate_state(1)[0])
