"""Bundles that are not what they seem: files that are not plain files, contracts with
numbers JSON does not have or graph shapes that lie, validations that never finish.

Anything here that could hang (a FIFO) runs under a watchdog thread, so a regression fails
the test in seconds instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pearl_robot.cli import main
from pearl_robot.runtime import PolicyRuntime, RuntimeConfig, load_bundle
from pearl_robot.runtime import policy as policy_mod
from pearl_robot.runtime.bundle import (
    ACTOR_FILE,
    CONTRACT_FILE,
    ENCODER_FILE,
    GOLDEN_FILE,
    BundleContractError,
    BundleFileMissingError,
    BundleFileTypeError,
    BundleGoldenError,
    read_contract,
    seal_contract,
)

OBS = np.array([0.3, -0.2])


def _bounded(fn: Callable[[], Any], seconds: float = 20.0) -> Any:
    """Run ``fn`` on a thread; fail (instead of hanging) when it does not return in time."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"did not return within {seconds} s (hangs)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _raw(bundle: Path) -> dict:
    return json.loads((bundle / CONTRACT_FILE).read_text())


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


# --------------------------------------------------------------------------- file types

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")


@needs_fifo
@pytest.mark.parametrize("name", [ACTOR_FILE, ENCODER_FILE, GOLDEN_FILE, CONTRACT_FILE])
def test_fifo_refused_without_blocking(bundle_copy: Path, name: str) -> None:
    _fifo(bundle_copy / name)
    with pytest.raises(BundleFileTypeError, match=rf"{name}.* is a FIFO"):
        _bounded(lambda: load_bundle(bundle_copy))


@needs_fifo
def test_link_to_a_fifo_refused(bundle_copy: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (bundle_copy / ACTOR_FILE).unlink()
    (bundle_copy / ACTOR_FILE).symlink_to(tmp_path / "pipe")
    with pytest.raises(BundleFileTypeError, match="FIFO.*symbolic link"):
        _bounded(lambda: load_bundle(bundle_copy))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
@pytest.mark.parametrize("name", [GOLDEN_FILE, CONTRACT_FILE])
def test_link_to_a_device_refused(bundle_copy: Path, device: str, name: str) -> None:
    """/dev/zero would read without end; /dev/null reads empty; neither is a bundle file."""
    if not os.path.exists(device):
        pytest.skip(f"{device} not present")
    (bundle_copy / name).unlink()
    (bundle_copy / name).symlink_to(device)
    with pytest.raises(BundleFileTypeError, match="character device"):
        _bounded(lambda: load_bundle(bundle_copy))


def test_directory_and_dangling_link_refused(bundle_copy: Path, tmp_path: Path) -> None:
    (bundle_copy / ENCODER_FILE).unlink()
    (bundle_copy / ENCODER_FILE).mkdir()
    with pytest.raises(BundleFileTypeError, match="encoder.onnx is a directory"):
        load_bundle(bundle_copy)
    (bundle_copy / ENCODER_FILE).rmdir()
    (bundle_copy / ENCODER_FILE).symlink_to(tmp_path / "nothing-here")
    with pytest.raises(BundleFileMissingError, match="encoder.onnx is a link to nothing"):
        load_bundle(bundle_copy)


def test_link_to_a_regular_file_is_fine(bundle_dir: Path, bundle_copy: Path) -> None:
    """A bundle assembled from links to the real files (a deploy tree) still loads."""
    (bundle_copy / ACTOR_FILE).unlink()
    (bundle_copy / ACTOR_FILE).symlink_to(bundle_dir / ACTOR_FILE)
    assert load_bundle(bundle_copy).sha256 == read_contract(bundle_dir).contract_sha256


def test_oversized_file_refused_before_reading(bundle_copy: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from pearl_robot.runtime import bundle as bundle_mod

    monkeypatch.setitem(bundle_mod.MAX_FILE_BYTES, ACTOR_FILE, 1000)
    with pytest.raises(BundleFileTypeError, match=r"actor\.onnx is \d+ bytes, over"):
        load_bundle(bundle_copy)


@needs_fifo
def test_cli_check_and_info_on_a_fifo(bundle_copy: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _fifo(bundle_copy / ACTOR_FILE)
    assert _bounded(lambda: main(["bundle", "check", str(bundle_copy), "--ticks", "0"])) == 1
    err = capsys.readouterr().err
    assert "actor.onnx is a FIFO" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert _bounded(lambda: main(["bundle", "info", str(bundle_copy)])) == 1
    out = capsys.readouterr()
    assert "actor.onnx is a FIFO" in out.err and "identity" in out.out


def test_cli_info_on_a_missing_file(bundle_copy: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (bundle_copy / ENCODER_FILE).unlink()
    (bundle_copy / GOLDEN_FILE).write_bytes(b"x")
    assert main(["bundle", "info", str(bundle_copy)]) == 1
    err = capsys.readouterr().err
    assert "encoder.onnx is missing" in err and "golden.npz: sha256" in err
    assert "2 problems" in err


# --------------------------------------------------------------------------- contracts

@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nonfinite_numbers_in_the_contract(bundle_copy: Path, token: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    text = (bundle_copy / CONTRACT_FILE).read_text()
    i = text.index('"var_floor": ') + len('"var_floor": ')
    j = text.index(",", i)
    (bundle_copy / CONTRACT_FILE).write_text(text[:i] + token + text[j:])
    line = text[:i].count("\n") + 1
    with pytest.raises(BundleContractError, match=rf"{token} at line {line} is not a valid"):
        read_contract(bundle_copy)
    for action in ("info", "check"):
        assert main(["bundle", action, str(bundle_copy)]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "not a valid JSON number" in err


def test_nan_as_a_string_is_just_a_string(bundle_copy: Path) -> None:
    """Only bare tokens are refused; a unit or a name may say "NaN"."""
    raw = _raw(bundle_copy)
    raw["observation"]["units"] = ["NaN", "Infinity"]
    seal_contract(bundle_copy, raw)
    assert read_contract(bundle_copy).obs_units == ("NaN", "Infinity")


def _lie(bundle: Path, edit: Callable[[dict], None]) -> None:
    raw = _raw(bundle)
    edit(raw)
    seal_contract(bundle, raw)


LIES = {
    "obs width": (lambda r: r["graphs"]["actor"]["inputs"].__setitem__("obs", ["batch", 3]),
                  r"graphs\.actor\.inputs\.obs declares shape \['batch', 3\]"),
    "action width": (lambda r: r["graphs"]["actor"]["outputs"].__setitem__(
        "action_mean", ["batch", 7]), r"graphs\.actor\.outputs\.action_mean"),
    "context width": (lambda r: r["graphs"]["encoder"]["inputs"].__setitem__(
        "transition", ["batch", 99]), r"graphs\.encoder\.inputs\.transition"),
    "fixed batch": (lambda r: r["graphs"]["encoder"]["outputs"].__setitem__(
        "mu", [8, 5]), r"graphs\.encoder\.outputs\.mu"),
    "other file": (lambda r: r["graphs"]["actor"].__setitem__("file", "actor2.onnx"),
                   r"graphs\.actor\.file is 'actor2\.onnx'"),
    "other tensor": (lambda r: r["graphs"]["actor"].__setitem__(
        "inputs", {"obs": ["batch", 2], "z": ["batch", 5]}), r"graphs\.actor\.inputs names"),
    "no graphs": (lambda r: r.pop("graphs"), "missing field graphs"),
    "golden rows": (lambda r: r["golden"].__setitem__("rows", 5), "golden.rows says 5"),
    "obs range": (lambda r: r["observation"].update(low=[1.0, 0.0], high=[0.0, 1.0]),
                  r"observation\.high\[x\] = 0 is below"),
    "nan-free tolerance": (lambda r: r["golden"].__setitem__("atol", -1.0), "golden.atol"),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_lying_contract_refused(bundle_copy: Path, lie: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """Consistently sealed (hashes fine) but wrong about the graphs or its own sizes."""
    edit, message = LIES[lie]
    _lie(bundle_copy, edit)
    with pytest.raises((BundleContractError, BundleGoldenError), match=message):
        load_bundle(bundle_copy)
    assert main(["bundle", "check", str(bundle_copy), "--ticks", "0"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --------------------------------------------------------------------------- hot-swap

def _rt(bundle: Path, **cfg: Any) -> PolicyRuntime:
    return PolicyRuntime(bundle, RuntimeConfig(**cfg), rng=np.random.default_rng(0))


@needs_fifo
def test_fifo_candidate_fails_and_a_later_swap_works(bundle_dir: Path, bundle_copy: Path,
                                                     other_bundle_dir: Path) -> None:
    _fifo(bundle_copy / ACTOR_FILE)
    rt = _rt(bundle_dir)
    rt.begin_episode()
    assert rt.request_swap(bundle_copy)
    st = rt.wait_for_validation(20)
    assert st.state == "failed" and "FIFO" in st.message
    assert rt.request_swap(other_bundle_dir)
    assert rt.wait_for_validation(30).state == "ready"
    assert rt.begin_episode().swapped_to == read_contract(other_bundle_dir).contract_sha256


def test_lying_candidate_is_not_swapped_in(bundle_dir: Path, bundle_copy: Path) -> None:
    _lie(bundle_copy, LIES["obs width"][0])
    rt = _rt(bundle_dir)
    rt.request_swap(bundle_copy)
    st = rt.wait_for_validation(20)
    assert st.state == "failed" and "graphs.actor.inputs.obs" in st.message
    assert rt.begin_episode().swapped_to is None


def test_hung_validation_times_out_and_later_swaps_work(
        bundle_dir: Path, other_bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A validation that never returns (a read on a dead mount) fails after swap_timeout; a
    later good candidate validates and swaps; the hung one's late result is dropped."""
    release = threading.Event()
    real_load = policy_mod.load_bundle

    def load(path: Path, *a: Any, **k: Any) -> Any:
        if Path(path).name == "hangs":
            release.wait(60)
            return real_load(other_bundle_dir, *a, **k)
        return real_load(path, *a, **k)

    monkeypatch.setattr(policy_mod, "load_bundle", load)
    rt = _rt(bundle_dir, swap_timeout=0.5)
    rt.begin_episode()
    t0 = time.monotonic()
    assert rt.request_swap(Path("/nonexistent/hangs"))
    assert not rt.request_swap(other_bundle_dir)  # still validating: ignored, as documented
    for _ in range(5):
        assert not rt.tick(OBS, reward=-1.0).safe  # control is never blocked
    st = rt.wait_for_validation()  # bounded by the timeout, not by the hung thread
    assert time.monotonic() - t0 < 5.0
    assert st.state == "failed" and "did not finish within 0.5 s" in st.message
    assert rt.request_swap(other_bundle_dir)
    assert rt.wait_for_validation(30).state == "ready"
    release.set()  # the hung validation now "finishes" with a model: it must not count
    time.sleep(0.5)
    assert rt.swap_status().path == str(other_bundle_dir)
    start = rt.begin_episode()
    assert start.swapped_to == read_contract(other_bundle_dir).contract_sha256
    rt.close()


def test_timeout_reported_without_a_new_request(bundle_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """swap_status alone turns an overdue validation into ``failed`` (the node polls it)."""
    release = threading.Event()
    rt = _rt(bundle_dir, swap_timeout=0.3)
    monkeypatch.setattr(policy_mod, "load_bundle", lambda *a, **k: release.wait(30))
    rt.request_swap(bundle_dir)
    assert rt.swap_status().state == "validating"
    time.sleep(0.4)
    assert rt.swap_status().state == "failed"
    release.set()


def test_swap_timeout_config_checked() -> None:
    from pearl_robot.errors import ConfigError

    with pytest.raises(ConfigError, match="swap_timeout"):
        RuntimeConfig(swap_timeout=0.0)


def test_pristine_bundle_still_copies_and_loads(bundle_dir: Path, tmp_path: Path) -> None:
    """Sanity: the strict reader accepts what the exporter writes (and a plain copy)."""
    dst = tmp_path / "b"
    shutil.copytree(bundle_dir, dst)
    assert load_bundle(dst).sha256 == read_contract(bundle_dir).contract_sha256
