"""Where the loop's morning retrain starts from: the running bundle's own checkpoint.pt, else
the checkpoint its provenance names when it is on this disk unchanged, else from scratch; and
the retrain command a warm start gives (the checkpoint's recipe, not the family's YAML)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pearl_robot.export.exporter import ExportConfig
from pearl_robot.export.testing import write_test_bundle
from pearl_robot.loop.mission import (
    LoopConfig,
    find_warm_start,
    retrain_argv,
    warm_start_checkpoint,
)
from pearl_robot.runtime.bundle import CHECKPOINT_FILE, CONTRACT_FILE, BundleHashError
from pearl_robot.runtime.contract import contract_content_sha256

SMALL = {"hidden_sizes": (32, 32), "encoder_hidden_sizes": (32, 32)}


def _bundle(root: Path, embed: bool) -> tuple[Path, Path]:
    """(bundle, the checkpoint it was exported from, which its provenance names)."""
    bundle, ckpt = root / "bundle", root / "source.pt"
    write_test_bundle(bundle, "point-robot", checkpoint_path=ckpt, config=ExportConfig(
        random_rows=32, record_steps=10, embed_checkpoint=embed), **SMALL)
    return bundle, ckpt


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _bundle(tmp_path_factory.mktemp("embedded"), embed=True)


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _bundle(tmp_path_factory.mktemp("old"), embed=False)


def test_the_bundles_own_checkpoint_comes_first(embedded: tuple[Path, Path]) -> None:
    bundle, source = embedded
    assert source.is_file()  # the provenance path exists too: the embedded copy still wins
    assert find_warm_start(bundle) == (bundle / CHECKPOINT_FILE, "bundle")
    assert warm_start_checkpoint(bundle) == bundle / CHECKPOINT_FILE


def test_a_moved_bundle_still_finds_its_checkpoint(embedded: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    """What the issue needs: the bundle on another machine, the training disk gone."""
    moved = tmp_path / "robot" / "arm3"
    shutil.copytree(embedded[0], moved)
    assert warm_start_checkpoint(moved) == moved / CHECKPOINT_FILE


def test_an_edited_embedded_checkpoint_is_refused(embedded: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(embedded[0], bundle)
    with open(bundle / CHECKPOINT_FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleHashError, match=CHECKPOINT_FILE):
        warm_start_checkpoint(bundle)


def test_an_old_bundle_falls_back_to_its_provenance_path(old: tuple[Path, Path]) -> None:
    bundle, source = old
    assert not (bundle / CHECKPOINT_FILE).exists()
    assert find_warm_start(bundle) == (source.resolve(), "provenance")


def test_an_old_bundle_whose_checkpoint_changed_or_is_gone_starts_from_scratch(
        old: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, source = old
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    raw = json.loads((changed / CONTRACT_FILE).read_text())
    raw["provenance"]["checkpoint_sha256"] = "0" * 64
    raw["contract_sha256"] = contract_content_sha256(raw)
    (changed / CONTRACT_FILE).write_text(json.dumps(raw))
    assert find_warm_start(changed) == (None, "none")
    gone = tmp_path / "gone"
    shutil.copytree(bundle, gone)
    raw["provenance"]["checkpoint"] = str(tmp_path / "nowhere" / "final.pt")
    raw["contract_sha256"] = contract_content_sha256(raw)
    (gone / CONTRACT_FILE).write_text(json.dumps(raw))
    assert warm_start_checkpoint(gone) is None


def _argv(init: Path | None, **cfg: object) -> list[str]:
    return retrain_argv(LoopConfig(train_set=("train.eval_every=8",), **cfg), "twin-arm",
                        Path("/n"), Path("/r"), Path("/b"), init)


def test_a_warm_start_retrains_with_the_checkpoints_recipe() -> None:
    argv = _argv(Path("/m/checkpoint.pt"))
    assert "--config" not in argv  # twin_arm.yaml's networks need not be the running model's
    assert argv[argv.index("--init") + 1] == "/m/checkpoint.pt"
    assert argv[argv.index("--set") + 1] == "train.eval_every=8"
    assert "--with-checkpoint" in argv


def test_from_scratch_and_an_explicit_config_keep_the_yaml() -> None:
    scratch = _argv(None)
    assert "--init" not in scratch
    assert Path(scratch[scratch.index("--config") + 1]).name == "twin_arm.yaml"
    given = _argv(Path("/m/checkpoint.pt"), train_config="/c/mine.yaml")
    assert given[given.index("--config") + 1] == "/c/mine.yaml" and "--init" in given
