"""The "particles" refinement of the pooled belief: a learned context-reward likelihood over
fixed hypotheses of z, so posterior sampling can avoid where a sparse reward said nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pearl_robot.core.config import ConfigError, PearlConfig
from pearl_robot.core.inference import ContextLayout
from pearl_robot.core.networks import ContextRewardDecoder, EnvSpec
from pearl_robot.core.pearl import TaskLabels, build
from pearl_robot.tasks.point_robot import PointRobotFamily, sparse_reward
from pearl_robot.train.trainer import draw_particles

SPEC = EnvSpec(2, 2, np.full(2, -0.1), np.full(2, 0.1))


def _cfg(**kw) -> PearlConfig:  # noqa: ANN003
    base = dict(hidden_sizes=(16,), encoder_hidden_sizes=(16,), latent_dim=2,
                inference="pooled", feature_dim=8, head_hidden_sizes=(8,),
                decoder_hidden_sizes=(32, 32), critic_trains_encoder=False, meta_batch=2,
                batch_size=4, embedding_batch_size=5, refinement="particles",
                num_particles=64)
    base.update(kw)
    return PearlConfig(**base)


def test_refinement_needs_the_pooled_belief() -> None:
    with pytest.raises(ConfigError, match="refinement"):
        PearlConfig(refinement="particles")  # pog
    with pytest.raises(ConfigError, match="refinement"):
        _cfg(refinement="grid")
    with pytest.raises(ConfigError, match="num_particles"):
        _cfg(num_particles=0)
    nets, _ = build(_cfg(), SPEC)
    assert nets.particles.shape == (64, 2)
    assert "particles" in nets.state_dict()  # a checkpoint keeps the hypotheses
    assert not hasattr(build(_cfg(refinement="off"), SPEC)[0], "context_decoder")


def test_log_likelihood_is_the_decoder_scored_row_by_row() -> None:
    torch.manual_seed(0)
    dec = ContextRewardDecoder(ContextLayout(2, 2, True), 3, (16, 16))
    rows = torch.randn(3, 11, 7)
    z = torch.randn(5, 3)
    got = dec.log_likelihood(rows, z, std=0.5, chunk=4)  # chunks that do not divide N
    pred = dec(rows[:, :, None].expand(3, 11, 5, 7), z.expand(3, 11, 5, 3))[..., 0]
    want = -((pred - rows[:, :, None, 4]) ** 2).sum(dim=1) / (2 * 0.25)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_particles_come_from_the_task_distribution_never_the_held_out_list() -> None:
    fam = PointRobotFamily(sparse=True)
    labels, mask = fam.task_labels(fam.train_tasks)
    parts = draw_particles(fam, 500, 4, labels, mask, np.random.default_rng(0))
    assert parts.shape == (500, 4) and parts.dtype == np.float32
    goals = fam.label_spec.decode(parts[:, :2])
    np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 1.0, atol=1e-5)  # half-circle
    assert goals[:, 1].min() >= -1e-6
    held = np.array([t.params["goal"] for t in fam.eval_tasks])
    assert np.abs(goals[:, None] - held[None]).sum(-1).min() > 1e-6
    assert abs(parts[:, 2:].std() - 1.0) < 0.1  # free dims: the prior
    # a family without labels: the prior everywhere
    free = draw_particles(fam, 300, 3, np.zeros((80, 0)), np.zeros((80, 0)),
                          np.random.default_rng(0))
    assert abs(free.mean()) < 0.1 and abs(free.std() - 1.0) < 0.1


def test_masked_labels_do_not_reach_the_context_decoder() -> None:
    cfg = _cfg(latent_dim=3)
    rng = np.random.default_rng(1)
    ctx = torch.as_tensor(rng.standard_normal((2, 5, 5)), dtype=torch.float32)
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    losses = []
    for masked_value in (0.0, 123.0):
        nets, learner = build(cfg, SPEC, seed=0)
        post = learner.agent.infer_posterior(ctx)
        vals = torch.tensor([[0.5, masked_value], [-0.5, 0.2]])
        aux: dict = {}
        losses.append(learner._context_decoder_loss(post, TaskLabels(vals, mask), ctx, None,
                                                    aux))
        assert "losses/context_reward_rec" in aux
    torch.testing.assert_close(losses[0], losses[1])


def test_a_trained_likelihood_moves_the_samples_off_the_visited_arc() -> None:
    """The context decoder trained on sparse point-robot rows with z = the true goal; after a
    trajectory that sat on the top of the half-circle and got nothing, posterior samples
    leave the top arc, and after one that got the reward, they land on the goal."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = _cfg(num_particles=400, particle_reward_std=0.1)
    nets, learner = build(cfg, SPEC, seed=0)
    dec = nets.context_decoder
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    fam = PointRobotFamily(sparse=True)

    def rows_for(goals: np.ndarray, pos: np.ndarray) -> torch.Tensor:
        a = rng.uniform(-1, 1, pos.shape)
        nxt = pos + 0.1 * a
        r = sparse_reward(np.linalg.norm(nxt - goals[:, None], axis=-1), 0.2)
        return torch.as_tensor(np.concatenate([pos, a, r[..., None]], -1), dtype=torch.float32)

    for _ in range(700):
        ang = rng.uniform(0, np.pi, 64)
        goals = np.stack([np.cos(ang), np.sin(ang)], 1)
        # half the rows near the goal (as a policy that reaches it), half anywhere
        near = goals[:, None] + rng.normal(0, 0.25, (64, 16, 2))
        far = rng.uniform(-1.2, 1.2, (64, 16, 2))
        rows = rows_for(goals, np.concatenate([near, far], 1))
        z = torch.as_tensor(goals, dtype=torch.float32)[:, None].expand(64, 32, 2)
        loss = (dec(rows, z) - dec.rewards(rows)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    labels, mask = fam.task_labels(fam.train_tasks)
    with torch.no_grad():
        nets.particles.copy_(torch.from_numpy(
            draw_particles(fam, 400, 2, labels, mask, np.random.default_rng(1))))
    agent = learner.agent

    def samples(goal: np.ndarray, path: np.ndarray, n: int = 300) -> np.ndarray:
        ctx = rows_for(goal[None], path[None])
        log_w = agent.particle_log_likelihood(ctx).expand(n, -1)
        return agent.sample_particle_z(log_w).numpy()

    # a trajectory that went straight up and stayed at the top (angle pi/2) for 10 steps
    path = np.concatenate([np.stack([np.zeros(10), np.linspace(0, 1, 10)], 1),
                           np.tile([[0.0, 1.0]], (10, 1))])
    def near_top(z: np.ndarray) -> float:
        return float(np.mean(np.abs(np.arctan2(z[:, 1], z[:, 0]) - np.pi / 2) < 0.3))

    prior_top = near_top(agent.sample_particle_z(torch.zeros(300, 400)).numpy())
    miss = samples(np.array([1.0, 0.0]), path)  # goal at angle 0: nothing up there
    ang = np.arctan2(miss[:, 1], miss[:, 0])
    left, right = np.mean(ang > np.pi / 2 + 0.3), np.mean(ang < np.pi / 2 - 0.3)
    # off the visited arc, and still spread over both unvisited sides (not collapsed)
    assert prior_top > 0.12 and near_top(miss) < 0.03, (prior_top, near_top(miss))
    assert left > 0.25 and right > 0.25, (left, right)
    hit = samples(np.array([0.0, 1.0]), path)  # the goal is at the top: found
    err = np.linalg.norm(hit - [0.0, 1.0], axis=1)
    assert np.median(err) < 0.15, np.median(err)
