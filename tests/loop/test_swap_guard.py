"""The provenance guard in the loop: a retrained bundle that the running node refuses for a
worse recorded held-out score is an outcome of the morning (the shipped model stays, or with
``override_guard`` the operator's override), not a crash; an integrity refusal still stops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pearl_robot.loop.procs import StageError
from pearl_robot.runtime.bundle import BundleError, read_contract, seal_contract
from pearl_robot.runtime.canary import CanaryConfig, QualityCanary

ros_probe = pytest.importorskip("pearl_robot.ros.loop_probe", reason="rclpy not installed")


class GuardedNode:
    """What ``/policy_node/set_parameters`` answers: a bundle is refused by the guard unless
    ``swap_override`` was set first, or refused outright for an integrity failure."""

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse
        self.params: dict[str, Any] = {"swap_override": False}
        self.calls: list[dict[str, Any]] = []

    def set_parameters(self, node: str, values: dict[str, Any]) -> None:
        assert node == "policy_node"
        self.calls.append(dict(values))
        if "bundle" in values:
            if self.refuse == "integrity":
                raise ros_probe.ProbeError("/policy_node refused bundle: actor.onnx sha256 "
                                           "does not match the contract")
            if self.refuse == "guard" and not self.params["swap_override"]:
                raise ros_probe.ProbeError(
                    "/policy_node refused bundle: provenance guard: the candidate's recorded "
                    "held-out return -90.000 is worse than the running bundle's -60.000")
        self.params.update(values)


def test_a_guard_refusal_keeps_the_shipped_model(tmp_path: Path) -> None:
    from pearl_robot.loop.mission import _offer_bundle

    node = GuardedNode("guard")
    swap = _offer_bundle(node, tmp_path / "b", override=False)
    assert swap["guard"] == "refused" and "provenance guard" in swap["reason"]
    assert node.params.get("bundle") is None and node.params["swap_override"] is False


def test_override_guard_sets_swap_override_then_offers_the_bundle_again(tmp_path: Path) -> None:
    from pearl_robot.loop.mission import _offer_bundle

    node = GuardedNode("guard")
    swap = _offer_bundle(node, tmp_path / "b", override=True)
    assert swap["guard"] == "overridden" and "-90.000" in swap["reason"]
    assert node.calls == [{"bundle": str(tmp_path / "b")}, {"swap_override": True},
                          {"bundle": str(tmp_path / "b")}]
    assert node.params["bundle"] == str(tmp_path / "b")


def test_an_integrity_refusal_stops_the_loop(tmp_path: Path) -> None:
    from pearl_robot.loop.mission import _offer_bundle

    with pytest.raises(StageError, match="sha256 does not match"):
        _offer_bundle(GuardedNode("integrity"), tmp_path / "b", override=True)
    assert _offer_bundle(GuardedNode("none"), tmp_path / "b", override=False)["guard"] == "passed"


def test_the_report_says_the_swap_was_refused_and_what_the_blocks_measured() -> None:
    from pearl_robot.loop.report import verdict_text

    cmp = {"delta_mean": -3.0, "delta_relative": -0.05, "after_mean": -63.0,
           "before_mean": -60.0, "delta_std_across_tasks": 2.0, "tasks_better": 1, "tasks": 2}
    swap = {"guard": "refused", "reason": "provenance guard: ... worse"}
    text = verdict_text(cmp, None, "shipped", True, None, swap)
    assert text.startswith("The retrained model was not swapped in")
    assert "repeat noise" in text and "-63.0 vs -60.0" in text and "--override-guard" in text
    passed = verdict_text(cmp, None, "retrained", True, None, {"guard": "passed"})
    assert passed.startswith("The retrained model is worse")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pearl_robot.export.testing import write_test_bundle

    out = tmp_path_factory.mktemp("guard") / "point"
    write_test_bundle(out, "point-robot", seed=0, hidden_sizes=(16, 16),
                      encoder_hidden_sizes=(16, 16))
    return out


def _with_score(src: Path, dst: Path, score: float) -> Path:
    shutil.copytree(src, dst)
    contract = json.loads((dst / "contract.json").read_text())
    contract["provenance"]["held_out"] = {"eval/test_final_return": score}
    seal_contract(dst, contract)
    return dst


def test_the_node_guard_uses_the_canary_margin(bundle_dir: Path, tmp_path: Path) -> None:
    """EpisodeController.check_swap: a candidate 10 % worse in simulation passes a 20 % canary
    margin and is offered for validation; 30 % worse is refused with the guard's prefix."""
    from pearl_robot.runtime.episodes import EpisodeController

    running = _with_score(bundle_dir, tmp_path / "running", -60.0)
    near = _with_score(bundle_dir, tmp_path / "near", -66.0)
    far = _with_score(bundle_dir, tmp_path / "far", -78.0)
    requested: list[str] = []
    ctl = object.__new__(EpisodeController)  # only check_swap's collaborators
    ctl.policy = SimpleNamespace(bundle=SimpleNamespace(contract=read_contract(running)),
                                 request_swap=lambda p: requested.append(str(p)) or True)
    ctl.canary = QualityCanary(CanaryConfig(margin=0.2))
    ctl.check_swap(str(near))
    assert requested == [str(near)]
    with pytest.raises(BundleError, match=r"^provenance guard: .*-78\.000.*allowed 12\.000"):
        ctl.check_swap(str(far))
    ctl.check_swap(str(far), override=True)
    assert requested == [str(near), str(far)]
