"""The robot runtime reproduces the torch agent's adaptation on held-out tasks.

Both sides run the PEARL test-time protocol on the same environments with the same seeds:
episode 0 with z from the prior, later episodes with z drawn from the posterior of all the
task's context so far, deterministic actions. The torch side is ``PearlAgent``
(``infer_posterior`` on the accumulated context rows, ``act``) and draws z's noise from a numpy
generator in the order the runtime documents, so both see the same noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
from pearl_robot.core.pearl import PearlAgent
from pearl_robot.export.testing import write_test_bundle
from pearl_robot.runtime import PolicyRuntime, RuntimeConfig
from pearl_robot.tasks.registry import make_family

# family -> (held-out tasks, episodes per task, pearl overrides)
CASES = {
    "point-robot": (4, 3, {}),
    "twin-arm": (2, 2, {"hidden_sizes": (128, 128), "encoder_hidden_sizes": (128, 128),
                        "use_next_obs_in_context": True}),
}


class Rollouts(NamedTuple):
    actions: list[np.ndarray]
    returns: list[float]


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    family = request.param
    n_tasks, n_eps, overrides = CASES[family]
    out = tmp_path_factory.mktemp("equiv") / family
    write_test_bundle(out, family, seed=3, output_gain=300.0, **overrides)
    ckpt = load_checkpoint(out.parent / f"{out.name}.ckpt.pt")
    fam = make_family(family)
    return family, fam, out, networks_from_checkpoint(ckpt), n_tasks, n_eps


def _act(nets, agent: PearlAgent, obs: np.ndarray, z: np.ndarray,
         rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic: ``PearlAgent.act``. Stochastic: the actor's own mean/log_std with the
    noise drawn from ``rng`` (``action_dim`` normals per step, as the runtime draws them)."""
    zt = torch.as_tensor(z, dtype=torch.float32)
    if rng is None:
        return agent.act(obs, zt, deterministic=True)
    with torch.inference_mode():
        o = nets.obs_norm(torch.as_tensor(obs, dtype=torch.float32)[None])
        out = nets.actor(o, zt[None], deterministic=True, with_log_prob=False)
        eps = torch.as_tensor(rng.standard_normal(nets.spec.action_dim), dtype=torch.float32)
        a = torch.tanh(out.mean[0] + out.log_std[0].exp() * eps)
        return nets.actor.to_physical(a).double().numpy(), a.numpy()


def _torch_rollouts(nets, fam, n_tasks: int, n_eps: int, seed: int,
                    stochastic: bool = False) -> Rollouts:
    agent = PearlAgent(nets)
    rng = np.random.default_rng(seed)
    env = fam.make_env(seed=seed)
    key = fam.context_reward_key
    L = nets.cfg.latent_dim
    acts, rets = [], []
    for ti, task in enumerate(fam.eval_tasks[:n_tasks]):
        env.set_task(task)
        context: list[np.ndarray] = []
        for ep in range(n_eps):
            eps = rng.standard_normal(L)
            if ep == 0:
                z = eps
            else:
                with torch.inference_mode():
                    post = agent.infer_posterior(torch.as_tensor(
                        np.array(context)[None], dtype=torch.float32))
                z = post.mean[0].double().numpy() + np.sqrt(post.var[0].double().numpy()) * eps
            obs, _ = env.reset(seed=1000 * ti + ep)
            ret = 0.0
            for _ in range(env.max_episode_steps):
                phys, norm = _act(nets, agent, obs, z, rng if stochastic else None)
                res = env.step(phys)
                r_ctx = float(res.info[key]) if key else float(res.reward)
                row = [obs, norm, [r_ctx]]
                if nets.cfg.use_next_obs_in_context:
                    row.append(res.obs)
                context.append(np.concatenate(row))
                acts.append(phys)
                ret += float(res.reward)
                obs = res.obs
                if res.terminated or res.truncated:
                    break
            rets.append(ret)
    env.close()
    return Rollouts(acts, rets)


def _runtime_rollouts(bundle: Path, fam, n_tasks: int, n_eps: int, seed: int,
                      config: RuntimeConfig) -> Rollouts:
    rt = PolicyRuntime(bundle, config, rng=np.random.default_rng(seed))
    env = fam.make_env(seed=seed)
    key = fam.context_reward_key
    acts, rets = [], []
    for ti, task in enumerate(fam.eval_tasks[:n_tasks]):
        env.set_task(task)
        for ep in range(n_eps):
            rt.begin_episode(task=task.index)
            obs, _ = env.reset(seed=1000 * ti + ep)
            r_ctx, ret = None, 0.0
            for _ in range(env.max_episode_steps):
                out = rt.tick(obs, r_ctx)
                assert not out.fault, out.reason
                res = env.step(out.command)
                r_ctx = float(res.info[key]) if key else float(res.reward)
                acts.append(out.command)
                ret += float(res.reward)
                obs = res.obs
                if res.terminated or res.truncated:
                    break
            rt.end_episode(obs, r_ctx)
            rets.append(ret)
    env.close()
    return Rollouts(acts, rets)


@pytest.mark.parametrize("stochastic", [False, True], ids=["deterministic", "stochastic"])
def test_runtime_reproduces_torch_agent(case, stochastic: bool) -> None:
    family, fam, bundle, nets, n_tasks, n_eps = case
    seed = 11
    ref = _torch_rollouts(nets, fam, n_tasks, n_eps, seed, stochastic)
    cfg = RuntimeConfig(context_window=10_000, stochastic_actions=stochastic)
    got = _runtime_rollouts(bundle, fam, n_tasks, n_eps, seed, cfg)
    span = float(np.max(nets.spec.action_high - nets.spec.action_low))
    a_ref, a_got = np.array(ref.actions), np.array(got.actions)
    assert a_ref.shape == a_got.shape
    np.testing.assert_allclose(a_got, a_ref, atol=2e-4 * span, rtol=0)
    np.testing.assert_allclose(got.returns, ref.returns, rtol=1e-3, atol=1e-3)
    # the comparison can fail: the policy really depends on z and on the context
    assert np.abs(a_ref).max() > 0.05 * span
    wrong = _runtime_rollouts(bundle, fam, n_tasks, n_eps, seed,
                              RuntimeConfig(z_schedule="fixed", stochastic_actions=stochastic,
                                            fixed_z=(0.0,) * nets.cfg.latent_dim))
    assert np.abs(np.array(wrong.actions) - a_ref).max() > 50 * 2e-4 * span
