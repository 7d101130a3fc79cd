"""Shared bundles for the runtime tests: real exports of small untrained point-robot models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pearl_robot.export.testing import write_test_bundle

SMALL = {"hidden_sizes": (32, 32), "encoder_hidden_sizes": (32, 32)}


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine point-robot bundle (reference network sizes); copy it before altering."""
    out = tmp_path_factory.mktemp("bundles") / "point"
    write_test_bundle(out, "point-robot", seed=0)
    return out


@pytest.fixture(scope="session")
def other_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same interface, other weights (seed 1): a hot-swap candidate."""
    out = tmp_path_factory.mktemp("bundles") / "point-seed1"
    write_test_bundle(out, "point-robot", seed=1, **SMALL)
    return out


@pytest.fixture()
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir, dst)
    return dst


@pytest.fixture(scope="session")
def twin_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small twin-arm bundle (effort commands, joint-state observations)."""
    out = tmp_path_factory.mktemp("twin") / "arm"
    write_test_bundle(out, "twin-arm", **SMALL)
    return out
