"""PolicyRuntime: safe command on bad input, schedules, belief, episodes, hot-swap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
from pearl_robot.core.pearl import PearlAgent
from pearl_robot.errors import ConfigError
from pearl_robot.runtime import PolicyRuntime, RuntimeConfig, load_bundle
from pearl_robot.runtime.bundle import ACTOR_FILE, CONTRACT_FILE, seal_contract

OBS = np.array([0.3, -0.2])


def _rt(bundle_dir: Path, **cfg) -> PolicyRuntime:
    return PolicyRuntime(bundle_dir, RuntimeConfig(**cfg), rng=np.random.default_rng(0))


class _BrokenActor:
    """Stands in for the bound actor graph: a diverged network (NaN/inf) or a failing run."""

    def __init__(self, out: np.ndarray, mode: str) -> None:
        self.out, self.mode = out, mode

    def run(self) -> None:
        if self.mode == "raise":
            raise RuntimeError("onnxruntime failure")
        self.out[...] = np.nan if self.mode == "nan" else np.inf


class TestSafety:
    @pytest.mark.parametrize("bad", [[np.nan, 0.0], [0.0, np.inf], [-np.inf, 1.0]])
    def test_nonfinite_obs_gives_safe_command(self, bundle_dir: Path, bad: list) -> None:
        rt = _rt(bundle_dir)
        rt.tick(OBS)
        out = rt.tick(bad, reward=-1.0)
        assert out.safe and out.fault and out.reason == "obs_nonfinite"
        np.testing.assert_array_equal(out.command, np.zeros(2))
        # and the loop recovers on the next good observation
        nxt = rt.tick(OBS, reward=-1.0)
        assert not nxt.safe and not nxt.fault

    def test_bad_transition_never_enters_the_belief(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir)
        rt.tick(OBS)
        rt.tick([np.nan, 0.0], reward=-1.0)
        rt.tick(OBS, reward=-1.0)  # its start obs was invalid: skipped
        out = rt.finish_tick()  # the complete result (the command left first)
        assert out.context_size == 0
        rt.tick(OBS, reward=-1.0)
        out = rt.finish_tick()
        assert out.context_size == 1 and np.all(np.isfinite(out.belief_mean))

    @pytest.mark.parametrize("obs", [[1.0, 2.0, 3.0], [1.0], "abc", None])
    def test_wrong_shape_obs(self, bundle_dir: Path, obs) -> None:
        out = _rt(bundle_dir).tick(obs)
        assert out.safe and out.reason == "obs_shape"

    def test_stale_obs_gives_safe_command(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir, max_obs_age=0.1)
        assert not rt.tick(OBS, obs_age=0.05).safe
        out = rt.tick(OBS, reward=-1.0, obs_age=0.2)
        assert out.safe and out.reason == "obs_stale"
        np.testing.assert_array_equal(out.command, rt.safe_command)
        assert rt.tick(OBS, obs_age=float("nan")).reason == "obs_stale"

    def test_default_staleness_is_two_periods(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir)
        assert not rt.tick(OBS, obs_age=0.099).safe
        assert rt.tick(OBS, obs_age=0.101).safe

    @pytest.mark.parametrize("mode,reason", [("nan", "action_nonfinite"),
                                             ("inf", "action_nonfinite"),
                                             ("raise", "actor_error")])
    def test_bad_network_output_gives_safe_command(self, bundle_dir: Path, mode: str,
                                                   reason: str) -> None:
        rt = _rt(bundle_dir, safe_action=(0.01, -0.01))
        rt._m.actor = _BrokenActor(rt._m.action_out, mode)
        out = rt.tick(OBS)
        assert out.safe and out.reason == reason
        np.testing.assert_array_equal(out.command, [0.01, -0.01])

    def test_nonfinite_reward_skips_the_update_only(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir)
        rt.tick(OBS)
        out = rt.tick(OBS, reward=float("nan"))
        assert out.fault and not out.safe and out.reason == "reward_nonfinite"
        assert out.context_size == 0

    def test_commands_within_limits_and_rate_limited(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir, max_rate=0.2, stochastic_actions=True)  # 0.01 per 50 ms tick
        rt.begin_episode()
        prev = np.zeros(2)
        rng = np.random.default_rng(5)
        for _ in range(50):
            out = rt.tick(rng.uniform(-3, 3, size=2), reward=-1.0)
            assert np.all(np.abs(out.command) <= 0.1 + 1e-12)
            assert np.all(np.abs(out.command - prev) <= 0.01 + 1e-12)
            prev = out.command

    def test_bad_config_refused(self, bundle_dir: Path) -> None:
        with pytest.raises(ConfigError, match="safe_action"):
            _rt(bundle_dir, safe_action=(1.0, 0.0))  # outside the +-0.1 limits
        with pytest.raises(ConfigError, match="unbounded"):
            RuntimeConfig(context_window=0)
        with pytest.raises(ConfigError, match="fixed_z"):
            _rt(bundle_dir, z_schedule="fixed", fixed_z=(1.0, 2.0))


class TestSchedulesAndEpisodes:
    def test_episode_schedule_keeps_z_within_and_resamples_between(self,
                                                                   bundle_dir: Path) -> None:
        rt = _rt(bundle_dir)
        s0 = rt.begin_episode(task="a")
        zs = [rt.tick(OBS + 0.01 * i, reward=-1.0).z for i in range(10)]
        assert all(np.array_equal(z, s0.z) for z in zs)
        summary = rt.end_episode(OBS, -1.0)
        assert summary.steps == 10 and summary.context_size == 10
        s1 = rt.begin_episode(task="a")
        assert not s1.belief_reset and not np.array_equal(s1.z, s0.z)
        assert rt.belief.count == 10

    @pytest.mark.parametrize("explore", [1, 2])
    def test_exploration_episodes_use_the_prior(self, bundle_dir: Path, explore: int) -> None:
        """After a reset, the first ``exploration_episodes`` draw z from N(0, I) even with
        context in the belief; then from the posterior (documented rng order: one
        latent-size draw per begin_episode)."""
        rt = _rt(bundle_dir, exploration_episodes=explore)
        draws = np.random.default_rng(0).standard_normal((3, 5))
        for ep in range(3):
            start = rt.begin_episode(task="a")
            if ep < explore:
                np.testing.assert_array_equal(start.z, draws[ep])
            else:
                want = rt.belief.mean + np.sqrt(rt.belief.var) * draws[ep]
                np.testing.assert_allclose(start.z, want, rtol=1e-12)
                assert rt.belief.count == 10 * ep
            for i in range(10):
                rt.tick(OBS + 0.02 * i, reward=-1.0)
            rt.end_episode(OBS, -1.0)

    def test_task_change_resets_the_belief(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir)
        rt.begin_episode(task="a")
        for _ in range(5):
            rt.tick(OBS, reward=-1.0)
        rt.end_episode(OBS, -1.0)
        assert rt.begin_episode(task="b").belief_reset
        assert rt.belief.count == 0
        np.testing.assert_array_equal(rt.belief.var, np.ones(5))

    def test_step_mean_follows_the_belief(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir, z_schedule="step_mean")
        rt.tick(OBS)
        for i in range(5):
            out = rt.tick(OBS + 0.05 * i, reward=-0.5 * i)
            np.testing.assert_array_equal(out.z, out.belief_mean)
        assert out.context_size == 5

    def test_fixed_z(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir, z_schedule="fixed", fixed_z=(1, 2, 3, 4, 5))
        rt.tick(OBS)
        assert np.array_equal(rt.tick(OBS, reward=-1.0).z, [1, 2, 3, 4, 5])

    def test_belief_equals_torch_posterior_on_the_same_context(self, bundle_dir: Path) -> None:
        """Encoder graph + running sums == PearlAgent.infer_posterior on the logged rows."""
        rt = _rt(bundle_dir)
        rt.begin_episode()
        rng = np.random.default_rng(7)
        rows, obs, r = [], rng.uniform(-1, 1, 2), None
        for _ in range(30):
            out = rt.tick(obs, r)
            nxt = obs + out.command
            r = float(-np.linalg.norm(nxt))
            rows.append(np.concatenate([obs, out.command / 0.1, [r]]))
            obs = nxt
        rt.end_episode(obs, r)
        ckpt = load_checkpoint(bundle_dir.parent / f"{bundle_dir.name}.ckpt.pt")
        agent = PearlAgent(networks_from_checkpoint(ckpt))
        with torch.inference_mode():
            post = agent.infer_posterior(torch.as_tensor(np.array(rows)[None],
                                                         dtype=torch.float32))
        np.testing.assert_allclose(rt.belief.mean, post.mean[0].numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(rt.belief.var, post.var[0].numpy(), rtol=1e-4)

    def test_window_bounds_the_context(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir, context_window=8, z_schedule="step_mean")
        rt.tick(OBS)
        sizes = [rt.tick(OBS, reward=-1.0).context_size for _ in range(20)]
        assert max(sizes) == 8 and sizes[-1] == 8

    def test_tick_results_are_copies(self, bundle_dir: Path) -> None:
        rt = _rt(bundle_dir, z_schedule="step_mean")
        a = rt.tick(OBS)
        cmd, mean = a.command.copy(), a.belief_mean.copy()
        rt.tick(OBS * 2, reward=-3.0)
        np.testing.assert_array_equal(a.command, cmd)
        np.testing.assert_array_equal(a.belief_mean, mean)


class TestHotSwap:
    def test_swap_validates_off_path_and_applies_at_boundary(self, bundle_dir: Path,
                                                             other_bundle_dir: Path) -> None:
        rt = _rt(bundle_dir)
        old = rt.bundle.sha256
        rt.begin_episode(task=0)
        assert rt.request_swap(other_bundle_dir)
        outs = [rt.tick(OBS, reward=-1.0) for _ in range(30)]  # control keeps running
        st = rt.wait_for_validation(30)
        assert st.state == "ready", st
        assert all(not o.safe for o in outs)
        assert rt.tick(OBS, reward=-1.0).command is not None
        assert rt.bundle.sha256 == old  # not mid-episode
        rt.end_episode()
        start = rt.begin_episode(task=0)
        assert start.swapped_to == load_bundle(other_bundle_dir).sha256
        assert rt.bundle.sha256 == start.swapped_to and start.belief_reset
        assert rt.swap_status().state == "swapped"
        assert not rt.tick(OBS).safe

    def test_corrupt_candidate_keeps_the_old_bundle(self, bundle_dir: Path,
                                                    bundle_copy: Path) -> None:
        data = bytearray((bundle_copy / ACTOR_FILE).read_bytes())
        data[1000] ^= 0xFF
        (bundle_copy / ACTOR_FILE).write_bytes(bytes(data))
        rt = _rt(bundle_dir)
        old = rt.bundle.sha256
        rt.begin_episode()
        rt.request_swap(bundle_copy)
        for _ in range(10):
            assert not rt.tick(OBS, reward=-1.0).safe
        st = rt.wait_for_validation(30)
        assert st.state == "failed" and "actor.onnx" in st.message
        start = rt.begin_episode()
        assert start.swapped_to is None and rt.bundle.sha256 == old
        assert not rt.tick(OBS).safe

    def test_incompatible_candidate_refused(self, bundle_dir: Path, bundle_copy: Path) -> None:
        raw = json.loads((bundle_copy / CONTRACT_FILE).read_text())
        raw["action"]["names"] = ["left", "right"]
        seal_contract(bundle_copy, raw)
        rt = _rt(bundle_dir)
        rt.request_swap(bundle_copy)
        st = rt.wait_for_validation(30)
        assert st.state == "failed" and "action_names" in st.message
        assert rt.begin_episode().swapped_to is None

    def test_candidate_with_another_latent_size_refused(self, bundle_dir: Path,
                                                        tmp_path: Path) -> None:
        """The logged belief's layout is fixed for the node's life: a candidate whose z has
        another size is refused at validation, and the running bundle keeps ticking."""
        from pearl_robot.export.testing import write_test_bundle

        other = tmp_path / "latent3"
        write_test_bundle(other, latent_dim=3)
        rt = _rt(bundle_dir)
        assert rt.bundle.contract.latent_dim != 3
        rt.request_swap(other)
        st = rt.wait_for_validation(30)
        assert st.state == "failed" and "latent_dim 3 differs" in st.message
        assert rt.begin_episode().swapped_to is None
        assert not rt.tick(OBS).safe

    def test_same_bundle_is_not_swapped(self, bundle_dir: Path, bundle_copy: Path) -> None:
        """Re-sending the running model (another path, same identity) keeps the belief."""
        rt = _rt(bundle_dir)
        rt.begin_episode(task=0)
        for _ in range(5):
            rt.tick(OBS, reward=-1.0)
        rt.request_swap(bundle_copy)
        assert rt.wait_for_validation(30).state == "unchanged"
        rt.end_episode(OBS, -1.0)
        start = rt.begin_episode(task=0)
        assert start.swapped_to is None and not start.belief_reset
        assert rt.belief.count == 5

    def test_missing_candidate(self, bundle_dir: Path, tmp_path: Path) -> None:
        rt = _rt(bundle_dir)
        rt.request_swap(tmp_path / "missing")
        assert rt.wait_for_validation(30).state == "failed"


def test_runtime_imports_neither_torch_nor_rclpy_nor_mujoco() -> None:
    code = ("import sys, pearl_robot.runtime, pearl_robot.runtime.cli; "
            "bad = [m for m in ('torch', 'rclpy', 'mujoco') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class _BrokenEncoder:
    def __init__(self, mu: np.ndarray, var: np.ndarray, mode: str) -> None:
        self.mu, self.var, self.mode = mu, var, mode

    def run(self) -> None:
        if self.mode == "raise":
            raise RuntimeError("onnxruntime failure")
        self.mu[...] = 0.5
        self.var[...] = {"nan": np.nan, "zero": 0.0, "negative": -1.0}[self.mode]


@pytest.mark.parametrize("mode,reason", [("raise", "encoder_error"), ("nan", "encoder_nonfinite"),
                                         ("zero", "encoder_nonfinite"),
                                         ("negative", "encoder_nonfinite")])
def test_bad_encoder_output_never_reaches_the_belief(bundle_dir: Path, mode: str,
                                                     reason: str) -> None:
    """A broken factor is skipped and flagged; the command itself stays the policy's."""
    rt = _rt(bundle_dir, z_schedule="step_mean")
    rt.tick(OBS)
    rt._m.encoder = _BrokenEncoder(rt._m.mu_out, rt._m.var_out, mode)
    out = rt.tick(OBS, reward=-1.0)
    assert out.fault and not out.safe and out.reason == reason
    assert out.context_size == 0
    np.testing.assert_array_equal(out.belief_var, np.ones(5))


class TestBoundGraph:
    def test_fast_path_matches_the_public_run(self, bundle_dir: Path) -> None:
        from pearl_robot.runtime.session import BoundGraph

        b = load_bundle(bundle_dir)
        rng = np.random.default_rng(0)
        feed = {"obs": np.zeros((1, 2), np.float32), "z": np.zeros((1, 5), np.float32),
                "eps": np.zeros((1, 2), np.float32)}
        out = np.zeros((1, 2), np.float32)
        g = BoundGraph(b.actor, feed, {"action_sample": out})
        assert g.fast_path
        for _ in range(20):
            for v in feed.values():
                v[...] = rng.standard_normal(v.shape)
            g.run()
            np.testing.assert_array_equal(out, b.actor.run(["action_sample"], feed)[0])

    def test_falls_back_to_the_public_run(self, bundle_dir: Path) -> None:
        """A session without the private C entry point (another onnxruntime build) still
        runs, through the public API, into the same buffers."""
        from pearl_robot.runtime.session import BoundGraph

        real = load_bundle(bundle_dir).encoder

        class PublicOnly:
            def run(self, names, feed):
                return real.run(names, feed)

            def io_binding(self):
                raise AttributeError("no io binding in this build")

        row = np.random.default_rng(1).standard_normal((1, 5)).astype(np.float32)
        mu, var = np.zeros((1, 5), np.float32), np.zeros((1, 5), np.float32)
        g = BoundGraph(PublicOnly(), {"transition": row}, {"mu": mu, "var": var})
        assert not g.fast_path
        g.run()
        want = real.run(["mu", "var"], {"transition": row})
        np.testing.assert_array_equal(mu, want[0])
        np.testing.assert_array_equal(var, want[1])


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [{}, {"context_window": 0, "forgetting": 0.99}],
                         ids=["window", "forgetting"])
def test_100k_ticks_keep_the_posterior_from_collapsing(bundle_dir: Path, cfg: dict) -> None:
    """100k ticks (~1.4 h at 20 Hz) through the real encoder graph: the belief variance stays
    at the level of a bounded context and matches an exact recomputation at the end."""
    rt = _rt(bundle_dir, z_schedule="step_mean", **cfg)
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, size=(100_000, 2))
    rt.tick(obs[0])
    mins = []
    for i in range(1, len(obs)):
        out = rt.tick(obs[i], reward=-0.1 * (i % 7))
        if i % 10_000 == 0:
            mins.append(out.belief_var.min())
    assert not out.fault
    assert min(mins) > 0.5 * mins[0]  # no downward drift after the context filled
    b = rt.belief
    window = b.window or 100_000
    w = b.forgetting ** np.arange(b.count)[::-1][:, None]
    ring = b._ring.ring[(b._ring.head - 1 - np.arange(b.count)[::-1]) % window] \
        if b.window else None
    if ring is not None:
        prec = (w * ring[:, 0]).sum(0)
        np.testing.assert_allclose(b.var, 1.0 / prec, rtol=1e-9)
