"""A bundle's embedded checkpoint.pt is one of its files: the loader and ``bundle check`` refuse
the bundle when it is edited, missing, not a regular file, or when the contract lists a name
outside the bundle directory. Bundles without one (the arm3 shipped before 2026-12-03,
tests/data/bundles/arm3-2026-11) load as before."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from pearl_robot.cli import main
from pearl_robot.export.exporter import ExportConfig
from pearl_robot.export.testing import write_test_bundle
from pearl_robot.runtime import load_bundle
from pearl_robot.runtime.bundle import (
    CHECKPOINT_FILE,
    CONTRACT_FILE,
    BundleContractError,
    BundleFileMissingError,
    BundleFileTypeError,
    BundleHashError,
    read_contract,
    seal_contract,
)
from pearl_robot.runtime.contract import contract_content_sha256

SMALL = {"hidden_sizes": (32, 32), "encoder_hidden_sizes": (32, 32)}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "with-ckpt"
    write_test_bundle(out, "point-robot", config=ExportConfig(
        random_rows=64, record_steps=20, embed_checkpoint=True), **SMALL)
    return out


@pytest.fixture()
def copy(embedded: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(embedded, dst)
    return dst


def test_a_pristine_copy_loads(copy: Path) -> None:
    assert CHECKPOINT_FILE in read_contract(copy).files
    load_bundle(copy)


def test_an_edited_checkpoint_is_refused_by_the_loader_and_by_check(
        copy: Path, capsys: pytest.CaptureFixture) -> None:
    blob = bytearray((copy / CHECKPOINT_FILE).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (copy / CHECKPOINT_FILE).write_bytes(bytes(blob))
    with pytest.raises(BundleHashError, match=rf"{CHECKPOINT_FILE}: sha256 .* differs"):
        load_bundle(copy)
    assert main(["bundle", "check", str(copy), "--ticks", "0"]) == 1
    assert main(["bundle", "info", str(copy)]) == 1
    err = capsys.readouterr().err
    assert f"{CHECKPOINT_FILE}: sha256" in err and "would be refused" in err


def test_a_missing_checkpoint_is_refused(copy: Path) -> None:
    (copy / CHECKPOINT_FILE).unlink()
    with pytest.raises(BundleFileMissingError, match=CHECKPOINT_FILE):
        load_bundle(copy)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_a_fifo_in_its_place_is_refused_without_blocking(copy: Path) -> None:
    (copy / CHECKPOINT_FILE).unlink()
    os.mkfifo(copy / CHECKPOINT_FILE)
    box: dict[str, BaseException] = {}

    def load() -> None:
        try:
            load_bundle(copy)
        except BaseException as exc:  # noqa: BLE001 - checked on the test thread
            box["error"] = exc

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "the loader blocked on a FIFO"
    assert isinstance(box.get("error"), BundleFileTypeError)
    assert "a FIFO" in str(box["error"])


def test_a_symlink_to_a_regular_copy_is_fine(copy: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.pt"
    shutil.move(copy / CHECKPOINT_FILE, real)
    (copy / CHECKPOINT_FILE).symlink_to(real)
    load_bundle(copy)  # the same rule as the other files: the bytes are what is checked


def _rewrite(bundle: Path, edit) -> None:  # noqa: ANN001 - a function of the raw JSON
    """Edit contract.json and re-hash it: a consistently sealed contract that lies."""
    raw = json.loads((bundle / CONTRACT_FILE).read_text())
    edit(raw)
    raw["contract_sha256"] = contract_content_sha256(raw)
    (bundle / CONTRACT_FILE).write_text(json.dumps(raw))


@pytest.mark.parametrize("name", ["../outside.pt", "/etc/hostname", ".hidden", CONTRACT_FILE])
def test_a_listed_name_outside_the_bundle_is_refused(copy: Path, name: str) -> None:
    _rewrite(copy, lambda raw: raw["files"].__setitem__(name, "0" * 64))
    with pytest.raises(BundleContractError, match="not a plain file name"):
        load_bundle(copy)


def test_an_old_contract_ignores_an_unlisted_checkpoint(copy: Path) -> None:
    """A bundle whose contract does not list checkpoint.pt (every bundle exported before the
    option, such as tests/data/bundles/arm3-2026-11) loads whatever lies under that name:
    only listed files count."""
    def unlist(raw: dict) -> None:
        raw["files"].pop(CHECKPOINT_FILE)
        raw["provenance"].pop("embedded_checkpoint")

    _rewrite(copy, unlist)
    (copy / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    assert CHECKPOINT_FILE not in load_bundle(copy).contract.files


def test_resealing_lists_the_checkpoint_that_is_there(copy: Path) -> None:
    raw = json.loads((copy / CONTRACT_FILE).read_text())
    raw["files"] = {}
    assert set(seal_contract(copy, raw)["files"]) == {"actor.onnx", "encoder.onnx",
                                                       "golden.npz", CHECKPOINT_FILE}
    load_bundle(copy)
