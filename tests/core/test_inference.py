"""Task inference: one context layout, the "pooled" belief (batch = step, torch = onnxruntime),
masked labels, calibration, and PEARL ("pog") unchanged by the modes beyond it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pearl_robot.core.config import ConfigError, PearlConfig
from pearl_robot.core.inference import ContextLayout, StepBelief, policy_latent
from pearl_robot.core.networks import EnvSpec, PooledEncoder
from pearl_robot.core.pearl import TaskLabels, build
from pearl_robot.core.replay import Path as ReplayPath
from pearl_robot.core.replay import context_from_path
from pearl_robot.core.types import RLBatch
from pearl_robot.tasks.base import LabelSpec, Task
from pearl_robot.tasks.point_robot import PointRobotFamily
from pearl_robot.tasks.twin_arm import TwinArmFamily

DATA = Path(__file__).parent / "data"
SPEC = EnvSpec(3, 2, np.full(2, -1.0), np.full(2, 1.0))


def _pooled(window: int = 8, head: str = "mlp") -> PooledEncoder:
    torch.manual_seed(0)
    return PooledEncoder(6, (16, 16), 12, (16,), 3, 1e-4, window, head, rank=2).eval()


class TestContextLayout:
    def test_rows_slices_and_contract_round_trip(self) -> None:
        lay = ContextLayout(3, 2, use_next_obs=True)
        assert lay.width == 3 + 2 + 1 + 3
        assert [f.name for f in lay.fields] == ["obs", "action", "reward", "next_obs"]
        rows = lay.rows(np.ones((4, 3)), 2 * np.ones((4, 2)), 3 * np.ones(4), 4 * np.ones((4, 3)))
        sl = lay.slices
        assert rows.shape == (4, 9)
        assert np.all(rows[:, sl["action"]] == 2) and np.all(rows[:, sl["next_obs"]] == 4)
        assert ContextLayout.from_fields(lay.to_contract()) == lay
        with pytest.raises(ValueError, match="order"):
            ContextLayout.from_fields(list(reversed(lay.to_contract())))
        with pytest.raises(ValueError, match="next observations"):
            ContextLayout(3, 2, True).rows(np.ones((1, 3)), np.ones((1, 2)), np.ones(1))

    def test_replay_rows_are_the_layout(self) -> None:
        rng = np.random.default_rng(0)
        p = ReplayPath(*(rng.standard_normal((5, d)).astype(np.float32) for d in (3, 2, 1, 3, 1)),
                       rng.standard_normal((5, 1)).astype(np.float32))
        for use_next in (False, True):
            lay = ContextLayout(3, 2, use_next)
            want = lay.rows(p.obs, p.actions, p.context_rewards, p.next_obs)
            np.testing.assert_array_equal(context_from_path(p, use_next), want)


class TestPooledBelief:
    @pytest.mark.parametrize("head", ["mlp", "anchors", "information"])
    def test_step_equals_batch_inference_inside_and_beyond_the_window(self, head: str) -> None:
        enc = _pooled(window=8, head=head)
        rows = torch.randn(1, 20, 6)
        ring, count = torch.zeros(1, 8, enc.features), torch.zeros(1, 1)
        with torch.no_grad():
            for t in range(20):
                ring, count, mu, var = enc.step(rows[:, t], ring, count)
                lo = max(0, t + 1 - 8)
                want = enc(rows[:, lo:t + 1])  # the newest `window` rows
                torch.testing.assert_close(mu, want.mean, atol=1e-6, rtol=1e-5)
                torch.testing.assert_close(var, want.var, atol=1e-6, rtol=1e-5)
                assert int(count.item()) == min(t + 1, 8)

    @pytest.mark.parametrize("head", ["mlp", "anchors", "information"])
    def test_order_invariant_and_empty_context_is_the_prior(self, head: str) -> None:
        enc = _pooled(head=head)
        rows = torch.randn(2, 7, 6)
        with torch.no_grad():
            a = enc(rows)
            b = enc(rows[:, torch.randperm(7)])
            torch.testing.assert_close(a.mean, b.mean)
            empty = enc(rows, torch.zeros(2, 7))
        assert torch.all(empty.mean == 0) and torch.all(empty.var == 1)

    @pytest.mark.parametrize("head", ["mlp", "information"])
    def test_mask_equals_shorter_context(self, head: str) -> None:
        enc = _pooled(head=head)
        rows = torch.randn(1, 10, 6)
        mask = torch.zeros(1, 10)
        mask[:, :4] = 1.0
        with torch.no_grad():
            torch.testing.assert_close(enc(rows, mask).mean, enc(rows[:, :4]).mean)
            torch.testing.assert_close(enc(rows, mask).var, enc(rows[:, :4]).var)

    def test_step_belief_batch_rows_keep_state_when_not_live(self) -> None:
        enc = _pooled()

        def step(rows, ring, count):  # noqa: ANN001, ANN202
            with torch.no_grad():
                out = enc.step(torch.as_tensor(rows), torch.as_tensor(ring),
                               torch.as_tensor(count))
            from pearl_robot.core.inference import StepOutput
            return StepOutput(*(o.numpy() for o in out))

        b = StepBelief(step, 3, 8, 12, batch=2)
        r = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
        b.add_rows(r, live=np.array([True, False]))
        assert b.counts.tolist() == [1, 0]
        assert np.all(b.mean[1] == 0) and np.all(b.var[1] == 1)
        assert not np.allclose(b.mean[0], 0)
        b.reset()
        assert b.counts.tolist() == [0, 0]

    def test_policy_latent(self) -> None:
        m, v = np.array([1.0, -1.0]), np.array([4.0, 0.25])
        np.testing.assert_allclose(policy_latent(m, v, "belief"), [1, -1, 2, 0.5])
        np.testing.assert_allclose(policy_latent(m, v, "sample", np.array([1.0, 2.0])),
                                   [3.0, 0.0])


class TestLabels:
    def test_label_spec_normalizes_and_masks_what_a_task_lacks(self) -> None:
        spec = LabelSpec(("goal[0]", "goal[1]", "mass", "k"), (-1, -1, 0, 0.5), (1, 1, 2, 2),
                         (False, False, False, True))
        v, m = spec.encode({"goal": [1.0, -1.0], "k": 2.0})
        np.testing.assert_allclose(v, [1.0, -1.0, 0.0, 1.0])
        np.testing.assert_array_equal(m, [1, 1, 0, 1])
        np.testing.assert_allclose(spec.decode(v)[[0, 1, 3]], [1.0, -1.0, 2.0])

    def test_families_expose_their_privileged_parameters(self) -> None:
        pr = PointRobotFamily()
        v, m = pr.task_labels(pr.train_tasks[:3])
        np.testing.assert_allclose(v, [t.params["goal"] for t in pr.train_tasks[:3]])
        assert m.min() == 1
        tw = TwinArmFamily(n_tasks=4, n_eval=1)
        v, m = tw.task_labels(tw.train_tasks)
        assert v.shape == (3, 13) and m.min() == 1 and np.all(np.abs(v) <= 1 + 1e-9)
        # a logged robot episode knows its goal only
        v, m = tw.task_labels([Task(-1, {"goal_qpos": [0.1, 0.2, 0.3]})])
        assert m[0, :3].tolist() == [1, 1, 1] and m[0, 3:].sum() == 0

    def test_masked_labels_contribute_nothing(self) -> None:
        cfg = PearlConfig(hidden_sizes=(16,), encoder_hidden_sizes=(16,), latent_dim=3,
                          inference="pooled", policy_input="belief", feature_dim=8,
                          head_hidden_sizes=(8,), decoder_hidden_sizes=(8,),
                          critic_trains_encoder=False, meta_batch=2, batch_size=4,
                          embedding_batch_size=5)
        rng = np.random.default_rng(1)
        f = lambda *s: torch.as_tensor(rng.standard_normal(s), dtype=torch.float32)  # noqa: E731
        batch = RLBatch(f(2, 4, 3), torch.clamp(f(2, 4, 2), -1, 1), f(2, 4, 1), f(2, 4, 3),
                        torch.zeros(2, 4, 1))
        ctx = f(2, 5, 6)
        mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        grads = []
        for masked_value in (0.0, 123.0):
            _nets, learner = build(cfg, SPEC, seed=0)
            vals = torch.tensor([[0.5, masked_value], [-0.5, 0.2]])
            post = learner.agent.infer_posterior(ctx)
            _kl, loss, aux = learner._pooled_losses(post, TaskLabels(vals, mask),
                                                    *(batch.obs.reshape(8, 3),
                                                      batch.actions.reshape(8, 2),
                                                      batch.next_obs.reshape(8, 3),
                                                      batch.rewards.reshape(8, 1)), 2, 4)
            grads.append(torch.autograd.grad(aux["losses/task_nll"],
                                             list(learner.nets.encoder.parameters())))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b)

    def test_latent_must_hold_the_labels(self, tmp_path: Path) -> None:
        from pearl_robot.core.config import ExperimentConfig, TrainConfig
        from pearl_robot.train.trainer import MetaTrainer

        cfg = ExperimentConfig(PearlConfig(latent_dim=1, inference="pooled"),
                               TrainConfig(task_family="point-robot", max_path_length=20,
                                           num_steps_per_eval=20))
        with pytest.raises(ConfigError, match="latent_dim must be >= the 2 task labels"):
            MetaTrainer(cfg, PointRobotFamily(), tmp_path, tensorboard=False, progress=False)


@pytest.mark.parametrize("head", ["mlp", "information"])
def test_belief_calibration_on_point_robot_goals(head: str) -> None:
    """Trained on the goal's likelihood alone, the pooled belief's 2-sigma interval holds the
    true (held-out) goal at about the nominal 95 % rate once the context has data (for the
    information head, whose variance is the exact posterior's of its learned measurements,
    as much as for the mlp head, which predicts it)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    enc = PooledEncoder(5, (64, 64), 64, (64,), 2, 1e-4, 20, head)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)

    def contexts(n: int, goals: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        s = rng.uniform(-1, 1, (n, 20, 2))
        a = rng.uniform(-1, 1, (n, 20, 2))
        r = -np.linalg.norm(s + 0.1 * a - goals[:, None], axis=-1, keepdims=True)
        mask = (np.arange(20)[None] < rng.integers(3, 21, n)[:, None]).astype(np.float32)
        return torch.as_tensor(np.concatenate([s, a, r], -1), dtype=torch.float32), \
            torch.as_tensor(mask)

    train_goals = rng.uniform(-1, 1, (400, 2))
    for _ in range(600):
        g = train_goals[rng.integers(400, size=64)]
        rows, mask = contexts(64, g)
        post = enc(rows, mask)
        y = torch.as_tensor(g, dtype=torch.float32)
        loss = (0.5 * ((y - post.mean) ** 2 / post.var + torch.log(post.var))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    held = rng.uniform(-1, 1, (2000, 2))
    rows, mask = contexts(2000, held)
    with torch.no_grad():
        post = enc(rows, mask)
    z = np.abs(held - post.mean.numpy()) / np.sqrt(post.var.numpy())
    coverage = float((z <= 2.0).mean())
    err = float(np.sqrt(((held - post.mean.numpy()) ** 2).mean()))
    assert err < 0.25, f"the belief did not learn the goal (rmse {err:.3f})"
    assert 0.88 <= coverage <= 0.99, f"2-sigma coverage {coverage:.3f}, nominal 0.954"


def _pog_numbers() -> dict:
    spec = importlib.util.spec_from_file_location(
        "record_pog_reference", Path(__file__).parents[2] / "tools" / "record_pog_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pog_numbers()


def test_pog_update_is_bit_for_bit_what_it_was() -> None:
    """PEARL's update (both SAC variants) gives exactly the metrics and weights it gave before
    the inference modes existed: commit 71984f9 run on the same inputs, recorded once per CPU
    kernel set (AVX2 and AVX512 round float32 sums differently; a recording from one cannot
    pin the other). A new kind of CPU gets its recording with tools/record_pog_reference.py."""
    recordings = json.loads((DATA / "pog_update_reference.json").read_text())["recordings"]
    now = _pog_numbers()
    variants = ("reference", "modern")
    exact = [r["cpu_capability"] for r in recordings
             if all(r[v] == now[v] for v in variants)]
    if exact:
        return
    # not bit-for-bit with any recording: say whether the math changed or the CPU is new
    close = [r["cpu_capability"] for r in recordings if all(
        np.allclose([m[k] for m in r[v]["metrics"] for k in sorted(m)],
                    [m[k] for m in now[v]["metrics"] for k in sorted(m)], rtol=1e-5)
        for v in variants)]
    raise AssertionError(
        f"pog update differs from every recording of 71984f9 "
        f"({[r['cpu_capability'] for r in recordings]}); this CPU: {now['cpu_capability']}. "
        + (f"Within 1e-5 of {close}: most likely a CPU kernel set without a recording (add "
           "one with tools/record_pog_reference.py), not a change of the math"
           if close else "Not even within 1e-5: the update's math changed")
        + f"\nnow: {json.dumps({v: now[v] for v in variants})[:1500]}")


def test_config_refuses_inconsistent_modes() -> None:
    with pytest.raises(ConfigError, match="inference"):
        PearlConfig(inference="particles")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="use_information_bottleneck"):
        PearlConfig(inference="pooled", use_information_bottleneck=False)
    assert dataclasses.replace(PearlConfig(), inference="pooled").inference == "pooled"
