"""A "particles" model's bundle: its encoder graph is one step of the particle belief (state
in, state out), equal in torch and in onnxruntime to the trainer's batch log-likelihood over
the same context, and the contract records what the runtime needs to run it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from pearl_robot.core.pearl import PearlAgent
from pearl_robot.export.graphs import OnnxParticleStep
from pearl_robot.export.testing import SMALL_PARTICLE_MODEL, write_test_bundle
from pearl_robot.runtime.bundle import (
    CONTRACT_FILE,
    ENCODER_FILE,
    GOLDEN_FILE,
    PARTICLE_STEP_INPUTS,
    PARTICLE_STEP_OUTPUTS,
    load_bundle,
    session_options,
)


def _context(nets, n: int, seed: int = 0) -> np.ndarray:  # noqa: ANN001
    """Physical context rows over and beyond the point robot's range (actions past the
    limits too: the graph clips them as the replay buffer's normalization does), rewards 0/1
    like the sparse family's."""
    rng = np.random.default_rng(seed)
    low, high = nets.spec.action_low, nets.spec.action_high
    obs = rng.uniform(-1.5, 1.5, (n, nets.spec.obs_dim))
    act = low + (high - low) * rng.uniform(-0.1, 1.1, (n, nets.spec.action_dim))
    rew = (rng.random(n) < 0.3).astype(np.float64)
    return nets.layout.rows(obs, act, rew, dtype=np.float64)


def _replay_rows(nets, rows: np.ndarray) -> torch.Tensor:  # noqa: ANN001
    """Physical rows -> the replay layout the trainer scores (actions in [-1, 1])."""
    t = torch.as_tensor(rows, dtype=torch.float32).clone()
    sl = nets.layout.slices["action"]
    t[:, sl] = torch.clamp((t[:, sl] - nets.actor.action_bias) / nets.actor.action_scale,
                           -1.0, 1.0)
    return t


def test_contract_records_the_particle_belief(particles) -> None:  # noqa: ANN001
    out, nets = particles
    raw = json.loads((out / CONTRACT_FILE).read_text())
    inf = raw["inference"]
    P, L = SMALL_PARTICLE_MODEL["num_particles"], SMALL_PARTICLE_MODEL["latent_dim"]
    assert {k: v for k, v in inf.items() if k != "particles"} == {
        "mode": "particles", "policy_input": "sample", "num_particles": P,
        "reward_std": SMALL_PARTICLE_MODEL["particle_reward_std"]}
    np.testing.assert_array_equal(np.asarray(inf["particles"]), nets.particles.numpy())
    enc = raw["graphs"]["encoder"]
    assert list(enc["inputs"]) == list(PARTICLE_STEP_INPUTS)
    assert list(enc["outputs"]) == list(PARTICLE_STEP_OUTPUTS)
    assert enc["inputs"]["log_w"] == ["batch", P] and enc["outputs"]["loglik"] == ["batch", P]
    assert raw["graphs"]["actor"]["inputs"]["z"] == ["batch", L]
    c = load_bundle(out).contract
    assert (c.inference_mode, c.num_particles, c.policy_latent_dim) == ("particles", P, L)
    assert c.particles.shape == (P, L) and not c.particles.flags.writeable
    with np.load(out / GOLDEN_FILE) as g:
        assert {"encoder_log_w", "encoder_log_w_out", "encoder_loglik"} <= set(g.files)
        assert "encoder_mu" not in g.files  # the particle step has no Gaussian output


def test_step_graph_equals_the_trainers_batch_log_likelihood(particles) -> None:  # noqa: ANN001
    """30 rows fed one per step from uniform log-weights: the state the graph hands back
    (onnxruntime) and the export wrapper (torch) both end at the log-weights the trainer
    computes over the whole context at once (``PearlAgent.particle_log_likelihood``), and
    each step's ``loglik`` is that row's batch log-likelihood."""
    out, nets = particles
    agent = PearlAgent(nets, "cpu")
    rows = _context(nets, 30)
    sess = ort.InferenceSession(str(out / ENCODER_FILE), session_options(),
                                providers=["CPUExecutionProvider"])
    wrapper = OnnxParticleStep(nets)
    P = SMALL_PARTICLE_MODEL["num_particles"]
    log_w_ort = np.zeros((1, P), np.float32)
    log_w_torch = torch.zeros(1, P)
    with torch.inference_mode():
        replay = _replay_rows(nets, rows)
        want = agent.particle_log_likelihood(replay[None])[0].numpy()  # [P], all rows
        per_row = agent.particle_log_likelihood(replay[:, None]).numpy()  # [N, P]
        for i, row in enumerate(rows.astype(np.float32)):
            log_w_ort, ll = sess.run(list(PARTICLE_STEP_OUTPUTS),
                                     {"transition": row[None], "log_w": log_w_ort})
            np.testing.assert_allclose(ll[0], per_row[i], rtol=1e-5, atol=1e-4)
            log_w_torch, ll_t = wrapper(torch.as_tensor(row[None]), log_w_torch)
            np.testing.assert_allclose(ll_t[0].numpy(), per_row[i], rtol=1e-5, atol=1e-4)
    assert np.ptp(want) > 1.0  # the particles are told apart: the check can fail
    np.testing.assert_allclose(log_w_ort[0], want, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(log_w_torch[0].numpy(), want, rtol=1e-5, atol=1e-3)


def test_a_batch_of_rows_is_scored_row_by_row(particles) -> None:  # noqa: ANN001
    """The graph's dynamic batch: each row with its own log-weights, as the exporter's parity
    check and golden vectors use it."""
    out, nets = particles
    agent = PearlAgent(nets, "cpu")
    rows = _context(nets, 9, seed=3).astype(np.float32)
    P = SMALL_PARTICLE_MODEL["num_particles"]
    log_w = np.random.default_rng(1).normal(0.0, 3.0, (9, P)).astype(np.float32)
    sess = ort.InferenceSession(str(out / ENCODER_FILE), session_options(),
                                providers=["CPUExecutionProvider"])
    lw_out, ll = sess.run(list(PARTICLE_STEP_OUTPUTS), {"transition": rows, "log_w": log_w})
    with torch.inference_mode():
        want = agent.particle_log_likelihood(_replay_rows(nets, rows)[:, None]).numpy()
    np.testing.assert_allclose(ll, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lw_out, log_w + want, rtol=1e-5, atol=1e-4)


def test_the_exporter_checked_parity_of_the_particle_step(particles) -> None:  # noqa: ANN001
    out, _nets = particles
    prov = json.loads((out / CONTRACT_FILE).read_text())["provenance"]
    err = prov["parity_max_abs_error"]
    assert set(err) == {"actor_action_mean", "actor_action_sample", "encoder_log_w_out",
                        "encoder_loglik"}
    assert max(err.values()) < 1e-3 and prov["parity_recorded_rows"] > 0


def test_a_pooled_model_without_particles_still_exports_the_pooled_step(tmp_path: Path
                                                                       ) -> None:
    cfg = {**SMALL_PARTICLE_MODEL, "refinement": "off"}
    cfg.pop("num_particles"), cfg.pop("particle_reward_std")
    write_test_bundle(tmp_path / "b", "sparse-point-robot", seed=0, **cfg)
    c = load_bundle(tmp_path / "b").contract
    assert (c.inference_mode, c.num_particles, c.particles) == ("pooled", 0, None)
