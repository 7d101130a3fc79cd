"""Export: a complete, sealed, parity-checked bundle, written atomically or not at all."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pearl_robot.cli import main as cli_main
from pearl_robot.core.checkpoint import load_checkpoint, save_checkpoint
from pearl_robot.core.replay import MultiTaskReplay
from pearl_robot.core.replay import Path as ReplayPath
from pearl_robot.export import exporter
from pearl_robot.export.exporter import (
    ExportConfig,
    ExportError,
    ExportParityError,
    export_checkpoint,
)
from pearl_robot.export.testing import write_test_bundle, write_test_checkpoint
from pearl_robot.runtime import PolicyRuntime, RuntimeConfig, load_bundle
from pearl_robot.runtime.bundle import (
    ACTOR_FILE,
    CONTRACT_FILE,
    ENCODER_FILE,
    GOLDEN_FILE,
    contract_content_sha256,
    sha256_file,
)

SMALL = {"hidden_sizes": (32, 32), "encoder_hidden_sizes": (32, 32)}
FAST = ExportConfig(random_rows=128, record_steps=40)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_checkpoint(tmp_path_factory.mktemp("ck") / "point.pt", "point-robot",
                                 seed=0, output_gain=100.0)


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


class TestBundleContents:
    def test_files_contract_and_hashes(self, ckpt: Path, tmp_path: Path) -> None:
        res = export_checkpoint(ckpt, tmp_path / "b", FAST)
        b = tmp_path / "b"
        assert sorted(p.name for p in b.iterdir()) == sorted(
            [ACTOR_FILE, ENCODER_FILE, CONTRACT_FILE, GOLDEN_FILE])
        raw = json.loads((b / CONTRACT_FILE).read_text())
        for name, digest in raw["files"].items():
            assert sha256_file(b / name) == digest
        assert raw["contract_sha256"] == contract_content_sha256(raw) == res.bundle_sha256
        assert raw["observation"]["names"] == ["x", "y"]
        assert raw["action"]["low"] == [-0.1, -0.1] and raw["action"]["high"] == [0.1, 0.1]
        assert raw["control_period"] == 0.05 and raw["latent_dim"] == 5
        assert [f["name"] for f in raw["context"]["fields"]] == ["obs", "action", "reward"]
        assert raw["posterior"]["convention"] == "pog-no-prior"
        assert raw["posterior"]["recommended_window"] == 64  # embedding batch of the preset
        assert raw["task_family"]["name"] == "point-robot"
        prov = raw["provenance"]
        assert prov["checkpoint_sha256"] == sha256_file(ckpt)
        assert prov["parity_recorded_rows"] == 40 and "rollout" in prov["parity_recorded_source"]
        assert _leftovers(tmp_path) == []

    def test_parity_errors_are_small(self, ckpt: Path, tmp_path: Path) -> None:
        res = export_checkpoint(ckpt, tmp_path / "b", FAST)
        assert set(res.parity.max_abs_error) == {"actor_action_mean", "actor_action_sample",
                                                 "encoder_mu", "encoder_var"}
        assert max(res.parity.max_abs_error.values()) < 1e-4
        assert res.parity.recorded_rows == 40 and res.parity.random_rows == 128

    def test_golden_vectors_match_torch(self, ckpt: Path, tmp_path: Path) -> None:
        """golden.npz holds the torch model's outputs (not onnxruntime's) for its inputs."""
        export_checkpoint(ckpt, tmp_path / "b", FAST)
        from pearl_robot.core.checkpoint import networks_from_checkpoint

        nets = networks_from_checkpoint(load_checkpoint(ckpt))
        with np.load(tmp_path / "b" / GOLDEN_FILE) as g:
            obs, z = torch.as_tensor(g["actor_obs"]), torch.as_tensor(g["actor_z"])
            with torch.inference_mode():
                out = nets.actor(nets.obs_norm(obs), z, deterministic=True)
                want = nets.actor.to_physical(out.action).numpy()
            np.testing.assert_allclose(g["actor_action_mean"], want, atol=1e-6)
            assert len(obs) == 32

    @pytest.mark.parametrize("overrides", [
        {"use_next_obs_in_context": True},
        {"use_information_bottleneck": False},
    ], ids=["next-obs-context", "no-information-bottleneck"])
    def test_model_variants_export_and_run(self, tmp_path: Path, overrides: dict) -> None:
        res = write_test_bundle(tmp_path / "b", "point-robot", config=FAST, output_gain=50.0,
                                **SMALL, **overrides)
        fields = [f["name"] for f in res.contract["context"]["fields"]]
        assert ("next_obs" in fields) == overrides.get("use_next_obs_in_context", False)
        rt = PolicyRuntime(tmp_path / "b", RuntimeConfig(), rng=np.random.default_rng(0))
        rt.tick([0.1, 0.2])
        rt.tick([0.2, 0.1], reward=-0.3)
        out = rt.finish_tick()  # the complete result, after the deferred belief update
        assert not out.fault and out.context_size == 1
        if not overrides.get("use_information_bottleneck", True):
            rt.end_episode()
            assert np.array_equal(rt.begin_episode().z, rt.belief.mean)  # z = context mean

    def test_sparse_family_declares_its_context_reward(self, tmp_path: Path) -> None:
        res = write_test_bundle(tmp_path / "b", "sparse-point-robot", config=FAST, **SMALL)
        assert res.contract["context"]["reward_key"] == "sparse_reward"
        assert res.contract["posterior"]["recommended_window"] == 1024

    def test_replay_buffers_are_the_recorded_inputs(self, ckpt: Path, tmp_path: Path) -> None:
        raw = torch.load(ckpt, weights_only=True)
        buf = MultiTaskReplay(3, 50, 2, 2)
        rng = np.random.default_rng(0)
        for t in range(3):
            n = 10 + 5 * t
            obs = rng.uniform(-1, 1, (n, 2))
            act = rng.uniform(-1, 1, (n, 2))
            buf.add_path(t, ReplayPath(obs, act, -np.ones((n, 1)), obs + 0.1 * act,
                                       np.zeros((n, 1)), -np.ones((n, 1))))
        raw["replay"] = {"rl": {k: torch.from_numpy(np.ascontiguousarray(v))
                                for k, v in buf.state_dict().items()}}
        with_replay = save_checkpoint(tmp_path / "r.pt", {k: v for k, v in raw.items()
                                                          if k != "format"})
        res = export_checkpoint(with_replay, tmp_path / "b", FAST)
        assert res.parity.recorded_source == "checkpoint replay buffers"
        assert res.parity.recorded_rows == 10 + 15 + 20


class TestRefusals:
    def test_parity_failure_writes_nothing(self, ckpt: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        """An exported graph that differs from the torch model (here: one weight nudged
        during export) is caught and no bundle appears."""
        real = exporter.export_actor

        def drifting_export(nets, path, opset):
            bad = copy.deepcopy(nets)
            with torch.no_grad():
                bad.actor.mean_head.weight[0, 0] += 0.5
            return real(bad, path, opset)

        monkeypatch.setattr(exporter, "export_actor", drifting_export)
        with pytest.raises(ExportParityError, match="actor_action_mean"):
            export_checkpoint(ckpt, tmp_path / "b", FAST)
        assert not (tmp_path / "b").exists()
        assert _leftovers(tmp_path) == []

    def test_encoder_parity_failure(self, ckpt: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
        real = exporter.export_encoder

        def drifting_export(nets, path, opset):
            bad = copy.deepcopy(nets)
            with torch.no_grad():
                bad.obs_norm.scale.mul_(1.01)  # a normalizer that drifted
            return real(bad, path, opset)

        monkeypatch.setattr(exporter, "export_encoder", drifting_export)
        with pytest.raises(ExportParityError, match="encoder_"):
            export_checkpoint(ckpt, tmp_path / "b", FAST)
        assert not (tmp_path / "b").exists()

    def test_existing_bundle_kept_unless_forced(self, ckpt: Path, tmp_path: Path) -> None:
        first = export_checkpoint(ckpt, tmp_path / "b", FAST)
        with pytest.raises(ExportError, match="already exists"):
            export_checkpoint(ckpt, tmp_path / "b", FAST)
        assert load_bundle(tmp_path / "b").sha256 == first.bundle_sha256
        other = write_test_checkpoint(tmp_path / "o.pt", "point-robot", seed=5, **SMALL)
        second = export_checkpoint(other, tmp_path / "b", ExportConfig(
            random_rows=64, record_steps=20, overwrite=True))
        assert second.bundle_sha256 != first.bundle_sha256
        assert load_bundle(tmp_path / "b").sha256 == second.bundle_sha256
        assert _leftovers(tmp_path) == []

    def test_failed_overwrite_keeps_the_old_bundle(self, ckpt: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        first = export_checkpoint(ckpt, tmp_path / "b", FAST)
        monkeypatch.setattr(exporter, "export_encoder",
                            lambda nets, path, opset: path.write_bytes(b"broken"))
        with pytest.raises(ExportError):
            export_checkpoint(ckpt, tmp_path / "b", ExportConfig(overwrite=True,
                                                                 random_rows=32,
                                                                 record_steps=0))
        assert load_bundle(tmp_path / "b").sha256 == first.bundle_sha256


class TestCli:
    def test_export_info_check(self, ckpt: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
        out = tmp_path / "b"
        assert cli_main(["export", str(ckpt), str(out), "--random-rows", "64",
                         "--record-steps", "20"]) == 0
        text = capsys.readouterr().out
        assert "wrote bundle" in text and "parity" in text
        assert cli_main(["bundle", "info", str(out)]) == 0
        info = capsys.readouterr().out
        assert "dx" in info and "pog-no-prior" in info and "0.05 s (20 Hz)" in info
        assert cli_main(["bundle", "check", str(out), "--joints", "dx,dy", "--ticks",
                         "50"]) == 0
        assert "check       OK" in capsys.readouterr().out

    def test_check_fails_with_the_reason(self, ckpt: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        out = tmp_path / "b"
        export_checkpoint(ckpt, out, FAST)
        data = bytearray((out / ENCODER_FILE).read_bytes())
        data[-10] ^= 0x40
        (out / ENCODER_FILE).write_bytes(bytes(data))
        assert cli_main(["bundle", "check", str(out)]) == 1
        assert "encoder.onnx: sha256" in capsys.readouterr().err
        assert cli_main(["bundle", "check", str(tmp_path / "b"), "--joints", "a,b"]) == 1

    def test_info_on_an_edited_contract_warns(self, ckpt: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        out = tmp_path / "b"
        export_checkpoint(ckpt, out, FAST)
        raw = json.loads((out / CONTRACT_FILE).read_text())
        raw["control_period"] = 0.01
        (out / CONTRACT_FILE).write_text(json.dumps(raw))
        assert cli_main(["bundle", "info", str(out)]) == 1
        cap = capsys.readouterr()
        assert "0.01 s (100 Hz)" in cap.out and "would be refused" in cap.err

    def test_export_of_a_missing_checkpoint(self, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
        assert cli_main(["export", str(tmp_path / "none.pt"), str(tmp_path / "b")]) == 1
        assert "checkpoint not found" in capsys.readouterr().err
        assert not (tmp_path / "b").exists()


def test_logged_datasets_as_recorded_inputs(ckpt: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`pearl-robot export --recorded DATASET`: parity on what the robot logged."""
    from pearl_robot.datalog.schema import TransitionLayout
    from pearl_robot.datalog.writer import DatasetWriter, WriterConfig

    layout = TransitionLayout(obs_dim=2, action_dim=2, latent_dim=5)
    w = DatasetWriter(tmp_path / "night1", layout, WriterConfig(robot="test-bot",
                                                                commit_every=10))
    rng = np.random.default_rng(0)
    for ep in range(3):
        w.set_task({"family": "point-robot", "index": 80 + ep, "params": {}})
        obs = rng.uniform(-1, 1, 2)
        for step in range(20):
            act = rng.uniform(-0.1, 0.1, 2)
            nxt = obs + act
            w.write(layout.pack(obs, act, -float(np.linalg.norm(nxt)), nxt, False, step == 19,
                                ep, step, 80 + ep))
            obs = nxt
    w.close()
    out = tmp_path / "b"
    assert cli_main(["export", str(ckpt), str(out), "--recorded", str(tmp_path / "night1"),
                     "--random-rows", "64"]) == 0
    assert "60 recorded rows (logged datasets" in capsys.readouterr().out
    raw = json.loads((out / CONTRACT_FILE).read_text())
    assert raw["provenance"]["parity_recorded_rows"] == 60
    # a dataset of another robot is refused with the reason
    w = DatasetWriter(tmp_path / "other", TransitionLayout(obs_dim=3, action_dim=2,
                                                           latent_dim=5), WriterConfig())
    w.set_task({"family": "x", "index": 0, "params": {}})
    w.write(TransitionLayout(obs_dim=3, action_dim=2, latent_dim=5).pack(
        np.zeros(3), np.zeros(2), 0.0, np.zeros(3), False, True, 0, 0))
    w.close()
    assert cli_main(["export", str(ckpt), str(tmp_path / "c"), "--recorded",
                     str(tmp_path / "other")]) == 1
    assert "wrong dataset" in capsys.readouterr().err
