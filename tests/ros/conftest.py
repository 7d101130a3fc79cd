"""Fixtures for the ROS tests: real rclpy over Fast DDS on loopback (tests/conftest.py isolates
the domain), a model bundle exported from untrained networks for plumbing tests, and the
trained bundle from models/ where one exists (for the adaptation test)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def untrained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, parity-checked twin-arm bundle of untrained networks (plumbing, not learning)."""
    torch = pytest.importorskip("torch")
    from pearl_robot.core.config import PearlConfig
    from pearl_robot.core.networks import EnvSpec, PearlNetworks
    from pearl_robot.export.exporter import ExportConfig, export_networks
    from pearl_robot.runtime.bundle import read_contract
    from pearl_robot.tasks.interface import EnvInterface
    from pearl_robot.tasks.registry import make_family

    family = make_family("twin-arm")
    env = family.make_env(seed=0)
    torch.manual_seed(0)
    # the latent size of the shipped bundle: a hot-swap keeps the logged belief's layout
    shipped = trained_bundle()
    latent = read_contract(shipped).latent_dim if shipped else 5
    nets = PearlNetworks(PearlConfig(latent_dim=latent), EnvSpec.from_env(env))
    interface = EnvInterface.from_env(env)
    out = tmp_path_factory.mktemp("bundles") / "twin-arm-untrained"
    export_networks(nets, out, interface=interface, family=family.describe(),
                    config=ExportConfig(overwrite=True))
    return out


@pytest.fixture(scope="session")
def corrupt_bundle(untrained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained bundle with one byte of actor.onnx flipped (its contract still parses)."""
    out = tmp_path_factory.mktemp("bundles") / "corrupt"
    shutil.copytree(untrained_bundle, out)
    actor = out / "actor.onnx"
    data = bytearray(actor.read_bytes())
    data[len(data) // 2] ^= 0xFF
    actor.write_bytes(bytes(data))
    return out


def trained_bundle() -> Path | None:
    """The first bundle under models/ trained on twin-arm (the lead ships one), else None.
    ``PEARL_TRAINED_BUNDLE=DIR`` checks another bundle (e.g. a fresh export) the same way."""
    override = os.environ.get("PEARL_TRAINED_BUNDLE")
    if override:
        return Path(override)
    root = REPO / "models"
    if not root.is_dir():
        return None
    for candidate in sorted(root.iterdir()):
        contract = candidate / "contract.json"
        if contract.is_file():
            info = json.loads(contract.read_text())
            if str(info.get("task_family", {}).get("name", "")).startswith("twin-arm"):
                return candidate
    return None


def params_file(tmp_path: Path, sections: dict[str, dict[str, Any]]) -> str:
    """A ROS parameters YAML with the given node -> {param: value} overrides."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({n: {"ros__parameters": p} for n, p in sections.items()}))
    return str(path)


@pytest.fixture
def ros_context() -> Iterator[Any]:
    """A fresh rclpy context per test (no global state shared between tests)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    ctx = Context()
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)
