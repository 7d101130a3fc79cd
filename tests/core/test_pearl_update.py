"""The PEARL update: gradient routing, both SAC variants, divergence diagnosis."""

import numpy as np
import pytest
import torch

from pearl_robot.core.config import PearlConfig
from pearl_robot.core.networks import EnvSpec
from pearl_robot.core.pearl import TrainingDivergedError, build, polyak_update
from pearl_robot.core.types import RLBatch

SPEC = EnvSpec(3, 2, np.array([-1.0, -2.0]), np.array([1.0, 2.0]))


def _batch(T=4, B=8, N=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = RLBatch(torch.randn(T, B, 3, generator=g), torch.rand(T, B, 2, generator=g) * 2 - 1,
                    torch.randn(T, B, 1, generator=g), torch.randn(T, B, 3, generator=g),
                    torch.zeros(T, B, 1))
    ctx = torch.randn(T, N, 3 + 2 + 1, generator=g)
    return batch, ctx


def _small(**kw):
    return PearlConfig(hidden_sizes=(16, 16), encoder_hidden_sizes=(16,), meta_batch=4,
                       batch_size=8, embedding_batch_size=6, **kw)


@pytest.mark.parametrize("variant", ["reference", "modern"])
def test_update_returns_finite_metrics_and_moves_every_trained_net(variant):
    nets, learner = build(_small(sac_variant=variant), SPEC, seed=0)
    before = {k: v.clone() for k, v in nets.state_dict().items()}
    m = learner.update(*_batch())
    assert all(np.isfinite(v) for v in m.values())
    changed = {k.split(".")[0] for k, v in nets.state_dict().items()
               if not torch.equal(v, before[k])}
    expected = {"encoder", "actor", "qf"} | ({"vf", "target_vf"} if variant == "reference"
                                            else {"target_qf", "log_alpha"})
    assert expected <= changed


def test_policy_loss_does_not_move_the_encoder():
    """Gradient routing: the encoder learns from the Bellman error and KL only. Its gradient
    when its optimizer steps must equal its gradient when the policy steps (the policy and V
    backward add nothing), and its weights must not change after its own step."""
    nets, learner = build(_small(), SPEC, seed=0)
    at_ctx_step, at_policy_step = {}, {}

    def snapshot(store, step):
        def wrapped(*a, **k):
            store.update({n: (p.grad.clone(), p.detach().clone())
                          for n, p in nets.encoder.named_parameters()})
            return step(*a, **k)
        return wrapped

    learner.context_opt.step = snapshot(at_ctx_step, learner.context_opt.step)
    learner.policy_opt.step = snapshot(at_policy_step, learner.policy_opt.step)
    learner.update(*_batch())
    assert at_ctx_step and at_policy_step
    for n, (grad, _) in at_ctx_step.items():
        assert torch.count_nonzero(grad) > 0, n  # the Q loss + KL did reach the encoder
        assert torch.equal(at_policy_step[n][0], grad), n
    for n, p in nets.encoder.named_parameters():
        assert torch.equal(p, at_policy_step[n][1]), n


def test_encoder_gets_gradient_from_q_loss_and_kl():
    nets, learner = build(_small(kl_lambda=0.0), SPEC, seed=0)
    batch, ctx = _batch()
    before = [p.clone() for p in nets.encoder.parameters()]
    learner.update(batch, ctx)
    assert any(not torch.equal(a, b) for a, b in zip(before, nets.encoder.parameters()))


def test_polyak_update_extremes():
    a = [torch.ones(3)]
    t = [torch.zeros(3)]
    polyak_update(a, t, 0.0)
    assert torch.equal(t[0], torch.zeros(3))
    polyak_update(a, t, 0.25)
    assert torch.allclose(t[0], torch.full((3,), 0.25))
    polyak_update(a, t, 1.0)
    assert torch.equal(t[0], a[0])


def test_nan_data_stops_with_a_diagnosis():
    _, learner = build(_small(), SPEC, seed=0)
    batch, ctx = _batch()
    batch = batch._replace(rewards=torch.full_like(batch.rewards, float("nan")))
    with pytest.raises(TrainingDivergedError, match="non-finite losses/qf"):
        learner.update(batch, ctx)


def test_same_seed_same_weights_and_updates():
    n1, l1 = build(_small(), SPEC, seed=3)
    n2, l2 = build(_small(), SPEC, seed=3)
    b, c = _batch()
    assert l1.update(b, c) == l2.update(b, c)
    for (k, v), (_, w) in zip(n1.state_dict().items(), n2.state_dict().items()):
        assert torch.equal(v, w), k


def test_no_task_inference_baseline_fixes_z_to_zero():
    nets, learner = build(_small(task_inference=False), SPEC, seed=0)
    enc = [p.clone() for p in nets.encoder.parameters()]
    batch, ctx = _batch()
    m = learner.update(batch, ctx)
    assert m["losses/kl"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(enc, nets.encoder.parameters()))
    post = learner.agent.infer_posterior(ctx)
    assert torch.count_nonzero(learner.agent.sample_z(post)) == 0
