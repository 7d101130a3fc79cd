"""``export --with-checkpoint``: the bundle carries a weights-only copy of its checkpoint, listed
and hashed like its other files, small, and loadable the way ``train --init`` loads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pearl_robot.cli import main as cli_main
from pearl_robot.core.checkpoint import load_checkpoint
from pearl_robot.export.exporter import ExportConfig, ExportError, export_checkpoint
from pearl_robot.export.testing import write_test_checkpoint
from pearl_robot.runtime import load_bundle
from pearl_robot.runtime.bundle import CHECKPOINT_FILE, read_contract, sha256_file

SMALL = {"hidden_sizes": (32, 32), "encoder_hidden_sizes": (32, 32)}
FAST = ExportConfig(random_rows=64, record_steps=20)
EMBED = ExportConfig(random_rows=64, record_steps=20, embed_checkpoint=True)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint as the trainer writes it, with resume-only state (optimizer moments, RNG
    states) that a weights-only copy must leave out."""
    path = write_test_checkpoint(tmp_path_factory.mktemp("ck") / "point.pt", "point-robot",
                                 seed=0, **SMALL)
    raw = torch.load(path, weights_only=True)
    raw["optimizers"] = {"policy": {"state": {0: {"exp_avg": torch.ones(4096)}},
                                    "param_groups": []}}
    raw["trainer"].update(numpy_rng='{"state": 1}', torch_rng=torch.zeros(5056,
                                                                          dtype=torch.uint8),
                          env_steps=1234, last_eval={"eval/test_final_return": -3.5})
    torch.save(raw, path)
    return path


@pytest.fixture(scope="module")
def embedded(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("b") / "bundle"
    export_checkpoint(ckpt, out, EMBED)
    return out


def test_the_checkpoint_is_listed_hashed_and_named_in_provenance(embedded: Path) -> None:
    c = read_contract(embedded)
    assert c.files[CHECKPOINT_FILE] == sha256_file(embedded / CHECKPOINT_FILE)
    assert c.provenance["embedded_checkpoint"] == CHECKPOINT_FILE  # bundle-relative
    assert load_bundle(embedded).sha256 == c.contract_sha256


def test_bundle_check_and_info_accept_it(embedded: Path, capsys: pytest.CaptureFixture
                                         ) -> None:
    assert cli_main(["bundle", "check", str(embedded), "--ticks", "0"]) == 0
    assert cli_main(["bundle", "info", str(embedded)]) == 0
    out = capsys.readouterr().out
    assert f"{CHECKPOINT_FILE}" in out and "warm-starting" in out


def test_it_holds_weights_config_and_counters_only(ckpt: Path, embedded: Path) -> None:
    src, copy = load_checkpoint(ckpt), load_checkpoint(embedded / CHECKPOINT_FILE)
    assert copy.replay is None and copy.optimizers == {}
    assert "numpy_rng" not in copy.trainer and "torch_rng" not in copy.trainer
    assert copy.trainer["weights_only"] is True and copy.trainer["env_steps"] == 1234
    assert copy.trainer["last_eval"] == {"eval/test_final_return": -3.5}
    assert copy.config == src.config and copy.env_meta == src.env_meta
    assert copy.family == src.family
    assert set(copy.networks) == set(src.networks)
    assert all(torch.equal(copy.networks[k], src.networks[k]) for k in src.networks)
    assert copy.provenance["weights_only_of_sha256"] == sha256_file(ckpt)
    # smaller than the source by what it left out (the optimizer moments, the RNG state)
    assert (embedded / CHECKPOINT_FILE).stat().st_size < ckpt.stat().st_size - 16_000


def test_the_embedded_checkpoint_re_exports_the_same_graphs(embedded: Path,
                                                            tmp_path: Path) -> None:
    """The copy is a checkpoint in its own right: exporting it gives the same ONNX files."""
    export_checkpoint(embedded / CHECKPOINT_FILE, tmp_path / "again", FAST)
    a, b = read_contract(embedded).files, read_contract(tmp_path / "again").files
    assert a["actor.onnx"] == b["actor.onnx"] and a["encoder.onnx"] == b["encoder.onnx"]


def test_without_the_option_the_bundle_is_as_before(ckpt: Path, tmp_path: Path) -> None:
    export_checkpoint(ckpt, tmp_path / "plain", FAST)
    c = read_contract(tmp_path / "plain")
    assert set(c.files) == {"actor.onnx", "encoder.onnx", "golden.npz"}
    assert "embedded_checkpoint" not in c.provenance
    assert not (tmp_path / "plain" / CHECKPOINT_FILE).exists()


def test_the_cli_option_embeds_it_and_prints_its_size(ckpt: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert cli_main(["export", str(ckpt), str(out), "--random-rows", "64", "--record-steps",
                     "20", "--with-checkpoint"]) == 0
    size = (out / CHECKPOINT_FILE).stat().st_size
    assert f"weights only, {size} bytes" in capsys.readouterr().out
    assert CHECKPOINT_FILE in read_contract(out).files


def test_a_copy_that_does_not_load_back_is_never_listed(ckpt: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    from pearl_robot.export import exporter

    real = exporter.weights_only_payload

    def wrong_weights(c):  # noqa: ANN001, ANN202 - a payload whose networks are not the model
        payload = real(c)
        payload["networks"] = {k: v + 1.0 if v.is_floating_point() else v
                               for k, v in payload["networks"].items()}
        return payload

    monkeypatch.setattr(exporter, "weights_only_payload", wrong_weights)
    with pytest.raises(ExportError, match="differs from the exported networks"):
        export_checkpoint(ckpt, tmp_path / "bad", EMBED)
    assert not (tmp_path / "bad").exists()
