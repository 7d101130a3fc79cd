"""A "pooled" bundle on the robot side: the step graph the runtime runs every tick gives the
belief that batch inference over the same context gives in torch, actions follow the belief,
and PEARL bundles still load next to it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
from pearl_robot.core.pearl import PearlAgent
from pearl_robot.export.testing import write_test_bundle
from pearl_robot.runtime import PolicyRuntime, RuntimeConfig, load_bundle
from pearl_robot.runtime.bundle import CONTRACT_FILE, STEP_INPUTS, BundleGoldenError
from pearl_robot.tasks.registry import make_family

POOLED = {"inference": "pooled", "policy_input": "belief", "hidden_sizes": (32, 32),
          "encoder_hidden_sizes": (32, 32), "feature_dim": 16, "head_hidden_sizes": (32,),
          "decoder_hidden_sizes": (16,), "embedding_batch_size": 24}


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("pooled") / "b"
    write_test_bundle(out, "twin-arm", seed=1, output_gain=30.0,
                      use_next_obs_in_context=True, **POOLED)
    nets = networks_from_checkpoint(load_checkpoint(out.parent / f"{out.name}.ckpt.pt"))
    return out, nets


@pytest.fixture(scope="module")
def information(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The "information" belief head: its step graph traces the sweep-operator inverse, while
    torch in eager mode inverts by Cholesky, so the parity check compares the two solvers."""
    out = tmp_path_factory.mktemp("information") / "b"
    write_test_bundle(out, "twin-arm", seed=1, output_gain=30.0, use_next_obs_in_context=True,
                      **POOLED, belief_head="information", belief_rank=2)
    nets = networks_from_checkpoint(load_checkpoint(out.parent / f"{out.name}.ckpt.pt"))
    return out, nets


def test_contract_names_the_mode_and_the_step_state(pooled) -> None:  # noqa: ANN001
    out, nets = pooled
    raw = json.loads((out / CONTRACT_FILE).read_text())
    assert raw["inference"] == {"mode": "pooled", "policy_input": "belief", "window": 24,
                                "features": 16}
    assert list(raw["graphs"]["encoder"]["inputs"]) == list(STEP_INPUTS)
    assert raw["graphs"]["actor"]["inputs"]["z"] == ["batch", 2 * nets.cfg.latent_dim]
    c = load_bundle(out).contract
    assert (c.inference_mode, c.step_window, c.policy_latent_dim) == \
        ("pooled", 24, 2 * nets.cfg.latent_dim)


def test_information_contract_sizes_the_ring_by_the_factors(information) -> None:  # noqa: ANN001
    out, nets = information
    raw = json.loads((out / CONTRACT_FILE).read_text())
    k = nets.cfg.latent_dim
    assert raw["inference"]["features"] == 2 * (k + 1)  # rank 2 x (direction, value)
    assert load_bundle(out).contract.policy_latent_dim == 2 * k


@pytest.mark.parametrize("bundle", ["pooled", "information"])
def test_runtime_belief_equals_torch_batch_inference(bundle: str,
                                                     request: pytest.FixtureRequest) -> None:
    """30 ticks (beyond the 24-transition window) on the twin: after every tick the runtime's
    belief (onnxruntime step graph, fixed-size state) equals ``PooledEncoder`` over the newest
    window of the same context rows, and the command equals the torch actor on [mean, std]."""
    out, nets = request.getfixturevalue(bundle)
    agent = PearlAgent(nets, "cpu")
    fam = make_family("twin-arm")
    env = fam.make_env(seed=0)
    env.set_task(fam.eval_tasks[0])
    rt = PolicyRuntime(out, RuntimeConfig(z_schedule="step_mean"), rng=np.random.default_rng(0))
    rt.begin_episode(task="t0")
    obs, _ = env.reset(seed=0)
    rows: list[np.ndarray] = []
    low, high = np.asarray(env.action_low), np.asarray(env.action_high)
    reward = None
    for t in range(30):
        res = rt.tick(obs, reward)
        assert not res.fault, res.reason
        # torch: the belief over the newest window of rows, then the actor on it
        with torch.inference_mode():
            if rows:
                ctx = torch.as_tensor(np.stack(rows[-24:])[None], dtype=torch.float32)
                post = agent.infer_posterior(ctx)
                np.testing.assert_allclose(res.belief_mean, post.mean[0].numpy(), atol=2e-5,
                                           rtol=1e-4)
                np.testing.assert_allclose(res.belief_var, post.var[0].numpy(), atol=2e-5,
                                           rtol=1e-4)
            z = np.concatenate([res.belief_mean, np.sqrt(res.belief_var)])
            np.testing.assert_allclose(res.z, z, atol=1e-6)
            want, _ = agent.act(obs, torch.as_tensor(z, dtype=torch.float32), deterministic=True)
        np.testing.assert_allclose(res.command, np.clip(want, low, high), atol=2e-4, rtol=1e-4)
        step = env.step(res.command)
        a_norm = 2.0 * (res.command - low) / (high - low) - 1.0
        rows.append(nets.layout.rows(obs, a_norm, step.reward, step.obs, dtype=np.float64))
        reward = step.reward
        obs = step.obs
        assert res.context_size == min(t, 24)
    env.close()


def test_online_evaluation_runs_the_robots_step(pooled) -> None:  # noqa: ANN001
    """The trainer's online evaluation and the runtime give the same returns on the same task
    (same step math, same window, same deterministic actions)."""
    from pearl_robot.train.evaluation import evaluate_online

    out, nets = pooled
    agent = PearlAgent(nets, "cpu")
    fam = make_family("twin-arm")
    t = fam.eval_indices[0]
    envs = [fam.make_env(seed=0)]
    ev = evaluate_online(agent, fam, [t], envs, num_episodes=1, max_path_length=40, repeats=1,
                         seed=11, z_schedule="mean")
    from pearl_robot.train.evaluation import _seed

    env = fam.make_env(seed=0)
    env.set_task(fam.tasks[t])
    obs, _ = env.reset(seed=_seed(11, t, 0, 0))
    rt = PolicyRuntime(out, RuntimeConfig(z_schedule="step_mean"), rng=np.random.default_rng(0))
    rt.begin_episode(task=t)
    total, reward = 0.0, None
    for _ in range(40):
        res = rt.tick(obs, reward)
        st = env.step(res.command)
        total += st.reward
        reward, obs = st.reward, st.obs
    assert total == pytest.approx(float(ev[0].returns[0, 0]), rel=2e-3, abs=0.05)
    env.close()
    envs[0].close()


def test_window_and_forgetting_are_fixed_by_the_graph(pooled) -> None:  # noqa: ANN001
    from pearl_robot.errors import ConfigError

    out, _ = pooled
    with pytest.raises(ConfigError, match="fixed window of 24"):
        PolicyRuntime(out, RuntimeConfig(context_window=10), rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="forgetting 1"):
        PolicyRuntime(out, RuntimeConfig(forgetting=0.99), rng=np.random.default_rng(0))


def test_a_step_graph_that_disagrees_with_its_golden_state_is_refused(pooled, tmp_path: Path
                                                                        ) -> None:  # noqa: ANN001
    import shutil

    from pearl_robot.runtime.bundle import GOLDEN_FILE, seal_contract

    out, _ = pooled
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    g = dict(np.load(bad / GOLDEN_FILE))
    g["encoder_ring_out"] = g["encoder_ring_out"] + 0.5
    np.savez(bad / GOLDEN_FILE, **g)
    raw = json.loads((bad / CONTRACT_FILE).read_text())
    seal_contract(bad, {k: v for k, v in raw.items() if k not in ("files", "contract_sha256")})
    with pytest.raises(BundleGoldenError, match="ring_out"):
        load_bundle(bad)


def test_a_nonfinite_step_never_enters_the_belief(pooled) -> None:  # noqa: ANN001
    out, _ = pooled
    rt = PolicyRuntime(out, RuntimeConfig(z_schedule="step_mean"), rng=np.random.default_rng(0))
    rt.begin_episode()
    obs = np.zeros(6)
    rt.tick(obs, None)
    rt.tick(obs, -1.0)
    before = (rt.belief.mean.copy(), rt.belief.count)
    res = rt.tick(obs, float("inf"))  # skipped before the graph
    assert "reward_nonfinite" in res.reason
    with np.errstate(over="ignore"):
        res = rt.tick(obs, 1e48)  # finite here, inf in the float32 graph: the step is refused
    assert "encoder_nonfinite" in res.reason
    np.testing.assert_array_equal(rt.belief.mean, before[0])
    assert rt.belief.count == before[1]


def test_hot_swap_between_pog_and_pooled_bundles(pooled, tmp_path: Path) -> None:  # noqa: ANN001
    """A running PEARL bundle swaps to a pooled one (and back) at an episode boundary, with a
    fresh belief of the new kind; old pog bundles keep loading next to pooled ones."""
    out, _ = pooled
    pog = tmp_path / "pog"
    write_test_bundle(pog, "twin-arm", seed=2, output_gain=30.0, use_next_obs_in_context=True,
                      hidden_sizes=(32, 32), encoder_hidden_sizes=(32, 32))
    rt = PolicyRuntime(pog, RuntimeConfig(), rng=np.random.default_rng(0))
    obs = np.zeros(6)
    rt.begin_episode(task="a")
    for _ in range(5):
        rt.tick(obs, -1.0)
    assert type(rt.belief).__name__ == "OnlineBelief" and rt.belief.count == 4
    assert rt.request_swap(out)
    assert rt.wait_for_validation(30).state == "ready"
    start = rt.begin_episode(task="a")
    assert start.swapped_to == load_bundle(out).sha256 and start.belief_reset
    assert type(rt.belief).__name__ == "StepBelief" and rt.belief.count == 0
    for _ in range(5):
        res = rt.tick(obs, -1.0)
    assert not res.fault and res.z.shape == (2 * rt.bundle.contract.latent_dim,)
    assert rt.request_swap(pog)
    assert rt.wait_for_validation(30).state == "ready"
    rt.begin_episode(task="a")
    assert type(rt.belief).__name__ == "OnlineBelief" and rt.belief.count == 0
    rt.close()


def test_act_first_gives_the_update_first_results(pooled) -> None:  # noqa: ANN001
    """Schedule ``episode`` on a pooled bundle (z = the belief frozen at the episode start):
    the step graph runs after the command, and every complete result, the belief state and
    the next episode's z are those of the update-first order (tests/runtime/test_act_first.py
    covers the PEARL bundle in depth)."""
    out, _ = pooled
    old = PolicyRuntime(out, RuntimeConfig(act_first=False), rng=np.random.default_rng(0))
    new = PolicyRuntime(out, RuntimeConfig(), rng=np.random.default_rng(0))
    assert new.acts_first and not old.acts_first
    rng = np.random.default_rng(3)
    for _ in range(3):
        za, zb = old.begin_episode(task="t").z, new.begin_episode(task="t").z
        np.testing.assert_array_equal(za, zb)
        reward = None
        for t in range(30):
            obs = rng.uniform(-0.5, 0.5, 6)
            a, e = old.tick(obs, reward), new.tick(obs, reward)
            assert e.deferred and not a.deferred
            np.testing.assert_array_equal(a.command, e.command)
            if t % 4:  # else the next tick (or end_episode) catches up
                f = new.finish_tick()
                for name in ("command", "z", "belief_mean", "belief_var"):
                    np.testing.assert_array_equal(getattr(a, name), getattr(f, name))
                assert (a.reason, a.safe, a.context_size) == (f.reason, f.safe, f.context_size)
            reward = float(rng.uniform(-1.0, 0.0)) if t != 10 else float("nan")
        sa, sb = old.end_episode(obs, reward), new.end_episode(obs, reward)
        assert sa.context_size == sb.context_size and sa.faults == sb.faults
        np.testing.assert_array_equal(sa.belief_mean, sb.belief_mean)
        np.testing.assert_array_equal(old.belief.ring, new.belief.ring)
