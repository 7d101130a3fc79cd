"""The particle belief on the robot side: the runtime's log-weights after every tick are the
trainer's evaluation's over the same rows, z is a particle drawn from the weights (seeded),
bad rows never reach the weights, the context stays bounded, the contract's particle fields
round-trip and are refused when malformed, and the older bundles load as before."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pearl_robot.core.inference import ParticleBelief, ParticleStepOutput
from pearl_robot.core.pearl import PearlAgent
from pearl_robot.errors import ConfigError
from pearl_robot.export.testing import SMALL_PARTICLE_MODEL
from pearl_robot.runtime import PolicyRuntime, RuntimeConfig, load_bundle
from pearl_robot.runtime.bundle import CONTRACT_FILE, BundleContractError, BundleHashError
from pearl_robot.runtime.change_detection import ChangeDetectionConfig
from pearl_robot.runtime.cli import summary
from pearl_robot.runtime.contract import Contract, contract_content_sha256, parse_contract_json
from pearl_robot.tasks.registry import make_family
from pearl_robot.train.evaluation import _add_particle_evidence

REPO = Path(__file__).resolve().parents[2]
P = SMALL_PARTICLE_MODEL["num_particles"]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())


def _close_log_w(got: np.ndarray, want: np.ndarray) -> None:
    """Normalized log-weights agree (float32 sums in both: relative to their size)."""
    want = _log_softmax(np.asarray(want, dtype=np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


# ------------------------------------------------------------------ the runtime vs the trainer

def test_runtime_log_weights_equal_the_trainers_evaluation(particles) -> None:  # noqa: ANN001
    """Three episodes of the sparse point robot: after every tick the runtime's log-weights
    (onnxruntime particle step, act-first) equal the trainer's over the same rows, and at
    every episode end they equal ``evaluate_reference``'s running log-weights, updated with
    each trajectory by ``_add_particle_evidence``."""
    out, nets = particles
    agent = PearlAgent(nets, "cpu")
    fam = make_family("sparse-point-robot")
    env = fam.make_env(seed=0)
    env.set_task(fam.eval_tasks[0])
    rt = PolicyRuntime(out, RuntimeConfig(), rng=np.random.default_rng(0))
    low, high = np.asarray(env.action_low), np.asarray(env.action_high)
    log_w = torch.zeros(1, P)  # the evaluation's state (uniform: the prior)
    total = 0
    for ep in range(3):
        start = rt.begin_episode(task="t0")
        assert any(np.array_equal(start.z, p) for p in rt.bundle.contract.particles)
        obs, _ = env.reset(seed=ep)
        traj: list[np.ndarray] = []
        reward = None
        while True:
            res = rt.tick(obs, reward)
            assert not res.fault, res.reason
            rt.finish_tick()
            if traj:  # this trajectory's rows so far on top of the earlier trajectories
                with torch.inference_mode():
                    now = log_w[0] + agent.particle_log_likelihood(
                        agent.context_to_tensor(np.stack(traj)[None]))[0]
                _close_log_w(rt.belief.log_weights, now.numpy())
            st = env.step(res.command)
            reward = float(st.info[fam.context_reward_key])
            a_norm = 2.0 * (res.command - low) / (high - low) - 1.0
            traj.append(nets.layout.rows(obs, a_norm, reward, dtype=np.float64))
            obs = st.obs
            if st.terminated or st.truncated:
                break
        rt.end_episode(obs, reward)  # the episode's last transition enters the belief
        with torch.inference_mode():
            _add_particle_evidence(agent, log_w, [np.stack(traj)])
        total += len(traj)
        assert rt.belief.count == total
        _close_log_w(rt.belief.log_weights, log_w[0].numpy())
    assert np.ptp(rt.belief.log_weights) > 1.0  # the evidence told the particles apart


def test_the_belief_summary_is_the_weighted_particle_set(particles) -> None:  # noqa: ANN001
    """What /pearl/belief and /diagnostics publish: the weighted mean and variance of the
    particles per latent dim, the context size and the effective sample size; uniform
    weights (the prior) before any evidence."""
    out, _nets = particles
    rt = PolicyRuntime(out, RuntimeConfig(z_schedule="step_mean"), rng=np.random.default_rng(0))
    parts = rt.bundle.contract.particles
    rt.begin_episode()
    b = rt.belief
    np.testing.assert_allclose(b.mean, parts.mean(axis=0))
    np.testing.assert_allclose(b.var, parts.var(axis=0))
    assert b.effective_sample_size == pytest.approx(P) and b.count == 0
    rng = np.random.default_rng(1)
    res = None
    for t in range(12):
        res = rt.tick(rng.uniform(-1, 1, 2), float(t % 3 == 0))
        assert not res.fault, res.reason
    w = np.exp(b.log_weights)
    assert w.sum() == pytest.approx(1.0)
    mean = w @ parts
    np.testing.assert_allclose(res.belief_mean, mean, atol=1e-12)
    np.testing.assert_allclose(res.belief_var, w @ (parts - mean) ** 2, atol=1e-12)
    np.testing.assert_allclose(res.z, mean, atol=1e-12)  # step_mean: z = the weighted mean
    assert res.context_size == 11 == b.count
    assert b.effective_sample_size == pytest.approx(1.0 / np.sum(w * w))
    assert 1.0 <= b.effective_sample_size < P


# ------------------------------------------------------------------ sampling

def _fixed_step(loglik: np.ndarray):  # noqa: ANN202
    """A step function that adds ``loglik`` [P] to whatever log-weights it is given."""
    ll = np.asarray(loglik, dtype=np.float32)[None]

    def step(rows: np.ndarray, log_w: np.ndarray) -> ParticleStepOutput:
        return ParticleStepOutput(log_w + ll, ll.copy())

    return step


def test_sampling_follows_the_weights_and_is_seeded() -> None:
    parts = np.arange(10, dtype=np.float64)[:, None] * np.ones((1, 2))
    ll = np.log(np.array([1, 2, 3, 4, 0, 0, 0, 0, 5, 85], dtype=np.float64) + 1e-30)
    belief = ParticleBelief(_fixed_step(np.maximum(ll, -1e4)), parts, window=8)
    belief.add_rows(np.zeros((1, 3)))
    want = np.array([1, 2, 3, 4, 0, 0, 0, 0, 5, 85]) / 100.0
    np.testing.assert_allclose(belief.weights, want, atol=1e-7)
    draws = [belief.sample_index(np.random.default_rng(7 + i)) for i in range(4)]
    assert draws == [belief.sample_index(np.random.default_rng(7 + i)) for i in range(4)]
    rng = np.random.default_rng(0)
    idx = np.array([belief.sample_index(rng) for _ in range(20000)])
    freq = np.bincount(idx, minlength=10) / idx.size
    np.testing.assert_allclose(freq, want, atol=0.01)  # ~4 sigma at n = 20000
    assert freq[4:8].sum() == 0.0  # zero weight: never drawn
    prior = np.array([belief.sample_index(rng, prior=True) for _ in range(20000)])
    np.testing.assert_allclose(np.bincount(prior, minlength=10) / prior.size, 0.1, atol=0.01)
    np.testing.assert_array_equal(belief.sample(np.random.default_rng(3)),
                                  parts[belief.sample_index(np.random.default_rng(3))])


def test_episode_z_is_a_particle_drawn_with_the_runtimes_rng(particles) -> None:  # noqa: ANN001
    """Exploration episodes draw from uniform weights, later ones from the belief's; one
    ``rng.random()`` per episode start, so a seed reproduces the whole sequence."""
    out, _nets = particles
    cfg = RuntimeConfig(exploration_episodes=1)
    rt = PolicyRuntime(out, cfg, rng=np.random.default_rng(5))
    parts = rt.bundle.contract.particles
    replay = np.random.default_rng(5)
    z0 = rt.begin_episode().z
    np.testing.assert_array_equal(z0, parts[int(replay.random() * P)])
    rng = np.random.default_rng(2)
    for t in range(15):
        assert not rt.tick(rng.uniform(-1, 1, 2), float(t % 4 == 0)).fault
    rt.end_episode()
    cdf = np.cumsum(rt.belief.weights)
    z1 = rt.begin_episode().z
    k = int(np.searchsorted(cdf, replay.random() * cdf[-1], side="right"))
    np.testing.assert_array_equal(z1, parts[k])
    twin = PolicyRuntime(out, cfg, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(twin.begin_episode().z, z0)


# ------------------------------------------------------------------ numerics and bounds

def test_bad_rows_never_reach_the_weights(particles) -> None:  # noqa: ANN001
    """A NaN observation or reward is refused before the graph (as for every belief); a
    finite row whose likelihood overflows (a reward of 1e30) is refused after it, with the
    weights as they were."""
    out, _nets = particles
    rt = PolicyRuntime(out, RuntimeConfig(act_first=False), rng=np.random.default_rng(0))
    rt.begin_episode()
    for t in range(5):
        assert not rt.tick(np.array([0.1 * t, 0.2]), 0.0).fault
    before, count = rt.belief.log_weights.copy(), rt.belief.count
    res = rt.tick(np.array([0.3, 0.2]), 1e30)
    assert "encoder_nonfinite" in res.reason and not res.safe
    res = rt.tick(np.array([0.4, 0.2]), float("nan"))
    assert "reward_nonfinite" in res.reason
    res = rt.tick(np.array([np.nan, 0.2]), 0.0)
    assert "obs_nonfinite" in res.reason and res.safe
    np.testing.assert_array_equal(rt.belief.log_weights, before)
    assert rt.belief.count == count and np.all(np.isfinite(rt.belief.feed))
    assert not rt.tick(np.array([0.5, 0.2]), 0.0).fault  # the chain starts again here
    assert not rt.tick(np.array([0.6, 0.2]), 0.0).fault
    assert rt.belief.count == count + 1


def test_a_non_finite_step_output_leaves_the_state_unchanged() -> None:
    parts = np.random.default_rng(0).standard_normal((6, 2))
    ll = np.zeros(6)
    belief = ParticleBelief(lambda rows, lw: ParticleStepOutput(lw + ll[None], ll[None].copy()),
                            parts, window=4)
    ll[:] = [0.0, -1.0, -2.0, -3.0, -4.0, -5.0]
    belief.add_rows(np.zeros((1, 3)))
    state = (belief.log_weights.copy(), belief.feed.copy(), belief.count)
    for bad in (np.nan, -np.inf):
        ll[2] = bad
        with pytest.raises(ValueError, match="non-finite"):
            belief.add_rows(np.zeros((1, 3)))
        np.testing.assert_array_equal(belief.log_weights, state[0])
        np.testing.assert_array_equal(belief.feed, state[1])
        assert belief.count == state[2]


def test_the_context_is_bounded_by_the_window_and_forgetting() -> None:
    """Window W: the log-weights are those of the newest W rows exactly, for thousands of
    rows (the exact re-sum every W rows keeps the ring subtraction from drifting);
    forgetting lam: the lam-weighted sum; an unbounded context is refused."""
    rng = np.random.default_rng(0)
    parts = rng.standard_normal((16, 2))
    lls = rng.normal(-20.0, 10.0, (3000, 16))
    box = {"i": 0}

    def step(rows: np.ndarray, log_w: np.ndarray) -> ParticleStepOutput:
        ll = lls[box["i"]][None].astype(np.float32)
        return ParticleStepOutput(log_w + ll, ll)

    for window, lam in ((7, 1.0), (7, 0.9), (None, 0.95)):
        belief = ParticleBelief(step, parts, window=window, forgetting=lam)
        for i in range(len(lls)):
            box["i"] = i
            belief.add_rows(np.zeros((1, 3)))
        n = len(lls) if window is None else window
        ages = lam ** np.arange(n)[::-1]
        want = ages @ lls[-n:].astype(np.float32).astype(np.float64)
        _close_log_w(belief.log_weights, want)
        assert belief.count == n
    with pytest.raises(ValueError, match="unbounded"):
        ParticleBelief(step, parts, window=None, forgetting=1.0)


def test_runtime_window_and_refusals(particles) -> None:  # noqa: ANN001
    out, _nets = particles
    c = load_bundle(out).contract
    rt = PolicyRuntime(out, RuntimeConfig(), rng=np.random.default_rng(0))
    assert rt.belief.window == c.recommended_window  # an evaluation's whole context
    assert PolicyRuntime(out, RuntimeConfig(context_window=0, forgetting=0.99),
                         rng=np.random.default_rng(0)).belief.window is None
    with pytest.raises(ConfigError, match="change_detection"):
        PolicyRuntime(out, RuntimeConfig(change_detection=ChangeDetectionConfig(enabled=True)),
                      rng=np.random.default_rng(0))


# ------------------------------------------------------------------ the contract

def _raw(bundle: Path) -> dict:
    return json.loads((bundle / CONTRACT_FILE).read_text())


def test_the_particle_contract_round_trips(particles) -> None:  # noqa: ANN001
    out, _nets = particles
    raw = _raw(out)
    c = Contract.from_json(raw)
    assert c.to_json() == raw and list(c.to_json()) == list(raw)
    assert list(c.to_json()["inference"]) == list(raw["inference"])
    assert contract_content_sha256(c.to_json()) == raw["contract_sha256"]
    assert Contract.from_json(c.to_json()) == c
    assert c.particle_reward_std == SMALL_PARTICLE_MODEL["particle_reward_std"]
    assert f"belief      particles, actor z input: sample; {P} particles" in summary(out, c)


def _breaks(raw: dict, edit, match: str) -> None:  # noqa: ANN001
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(BundleContractError, match=match):
        Contract.from_json(bad)


def test_malformed_particle_fields_are_refused(particles) -> None:  # noqa: ANN001
    out, _nets = particles
    raw = _raw(out)
    inf = "inference"

    def put(key: str, value):  # noqa: ANN001, ANN202
        return lambda r: r[inf].__setitem__(key, value)

    def row(i: int, value):  # noqa: ANN001, ANN202
        return lambda r: r[inf]["particles"].__setitem__(i, value)

    def entry(i: int, j: int, value):  # noqa: ANN001, ANN202
        return lambda r: r[inf]["particles"][i].__setitem__(j, value)

    _breaks(raw, row(3, [0.1]), r"particles\[3\] must be 2 finite numbers")  # wrong width
    _breaks(raw, row(0, [0.1, 0.2, 0.3]), r"particles\[0\] must be 2")
    _breaks(raw, row(1, "0.1, 0.2"), r"particles\[1\]")
    _breaks(raw, entry(5, 1, float("nan")), r"particles\[5\] must be 2 finite numbers")
    _breaks(raw, entry(5, 0, float("inf")), r"particles\[5\]")
    _breaks(raw, entry(2, 0, True), r"particles\[2\]")
    _breaks(raw, put("num_particles", P + 1), rf"has {P} rows, inference.num_particles says "
                                              rf"{P + 1}")
    _breaks(raw, lambda r: r[inf]["particles"].pop(), rf"has {P - 1} rows")
    _breaks(raw, put("num_particles", 0), "num_particles must be > 0")
    _breaks(raw, lambda r: r[inf].pop("particles"), "missing field inference.particles")
    _breaks(raw, lambda r: r[inf].pop("num_particles"), "missing field inference.num_particles")
    _breaks(raw, put("reward_std", 0.0), "reward_std must be a finite number > 0")
    _breaks(raw, put("reward_std", "0.1"), "reward_std must be float")
    _breaks(raw, put("policy_input", "belief"), "policy_input must be 'sample'")
    # the graphs must speak the same P
    _breaks(raw, lambda r: r["graphs"]["encoder"]["inputs"].__setitem__("log_w",
                                                                       ["batch", P - 1]),
            r"graphs.encoder.inputs.log_w declares shape")
    _breaks(raw, lambda r: r["graphs"]["encoder"].__setitem__(
        "inputs", {"transition": r["graphs"]["encoder"]["inputs"]["transition"],
                   "ring": ["batch", 3, 4], "count": ["batch", 1]}), "the runtime feeds")
    # NaN in the file itself: not JSON
    text = (out / CONTRACT_FILE).read_text()
    first = json.dumps(raw[inf]["particles"][0][0])
    with pytest.raises(BundleContractError, match="NaN"):
        parse_contract_json(text.replace(first, "NaN", 1))


def test_an_edited_particle_is_refused_as_an_edit(particles, tmp_path: Path
                                                  ) -> None:  # noqa: ANN001
    """The particles are covered by the contract's hash: one edited value is an edited
    bundle."""
    out, _nets = particles
    dst = tmp_path / "b"
    shutil.copytree(out, dst)
    raw = _raw(dst)
    raw["inference"]["particles"][0][0] += 0.5
    (dst / CONTRACT_FILE).write_text(json.dumps(raw, indent=2))
    with pytest.raises(BundleHashError, match="contract_sha256"):
        load_bundle(dst)


# ------------------------------------------------------------------ the older bundles

def test_pog_and_shipped_bundles_still_load_and_tick(bundle_dir: Path) -> None:
    bundles = REPO / "tests" / "data" / "bundles"
    for path, mode in ((bundle_dir, "pog"), (REPO / "models" / "arm3", "pooled"),
                       (bundles / "arm3-2026-12-pearl", "pog"),
                       (bundles / "arm3-2026-11", "pog")):
        before = (path / CONTRACT_FILE).read_bytes()
        b = load_bundle(path)
        assert b.contract.inference_mode == mode and b.contract.num_particles == 0
        assert b.contract.particles is None
        assert Contract.from_json(_raw(path)).to_json() == _raw(path)
        rt = PolicyRuntime(b, RuntimeConfig(), rng=np.random.default_rng(0))
        rt.begin_episode()
        obs = np.zeros(b.contract.obs_dim)
        assert not rt.tick(obs, None).fault and not rt.tick(obs, 0.0).fault
        assert not hasattr(rt.belief, "effective_sample_size")
        assert (path / CONTRACT_FILE).read_bytes() == before
