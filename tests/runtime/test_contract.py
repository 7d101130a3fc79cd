"""The typed contract: ``Contract.from_json`` and ``to_json`` are inverse on every shipped and
test bundle, old contracts of the same schema load through the documented reading of their
absent fields, other schemas are refused with a way out, and nothing a newer exporter adds is
lost on the way through."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pearl_robot.runtime.bundle import (
    CONTRACT_FILE,
    BundleContractError,
    load_bundle,
    read_contract,
    seal_contract,
)
from pearl_robot.runtime.contract import (
    UNSPECIFIED,
    Contract,
    contract_content_sha256,
    parse_contract_json,
)
from pearl_robot.tasks import interface

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (REPO / "models").glob("*/contract.json"))
OLD_ARM3 = REPO / "tests" / "data" / "bundles" / "arm3-2026-11"
"""The arm3 bundle shipped until 2026-12-03, kept as it was: a contract from before the
``inference`` section and the embedded checkpoint."""
PEARL_ARM3 = REPO / "tests" / "data" / "bundles" / "arm3-2026-12-pearl"
"""The PEARL arm3 of `make model` shipped 2026-12-03 to 12-04 (the change-detection bench's
bundle: the detector runs on pog bundles)."""


def _raw(bundle: Path) -> dict:
    return json.loads((bundle / CONTRACT_FILE).read_text())


def _assert_round_trip(bundle: Path) -> Contract:
    raw = _raw(bundle)
    c = Contract.from_json(raw)
    out = c.to_json()
    assert out == raw
    assert list(out) == list(raw)  # key order too: the file reads the same
    # number types included: the content hash of the rewritten JSON is the recorded identity
    assert contract_content_sha256(out) == raw["contract_sha256"] == c.contract_sha256
    assert json.dumps(out, indent=2) == json.dumps(raw, indent=2)
    assert Contract.from_json(out) == c
    return c


def test_there_is_a_shipped_bundle() -> None:
    assert [p.name for p in SHIPPED] == ["arm3"]


@pytest.mark.parametrize("bundle", [*SHIPPED, OLD_ARM3, PEARL_ARM3],
                         ids=[*(p.name for p in SHIPPED), "old-arm3", "pearl-arm3"])
def test_shipped_bundles_round_trip_and_load_unchanged(bundle: Path) -> None:
    before = (bundle / CONTRACT_FILE).read_bytes()
    c = _assert_round_trip(bundle)
    b = load_bundle(bundle)
    assert b.contract == c and b.sha256 == c.contract_sha256
    assert (bundle / CONTRACT_FILE).read_bytes() == before  # read, never rewritten


def test_the_old_arm3_is_read_through_the_migration() -> None:
    """The arm3 shipped before 2026-12-03 predates ``inference``: it reads as pog with a
    sample policy input, and writing it back keeps the section absent (its hash holds)."""
    raw = _raw(OLD_ARM3)
    assert "inference" not in raw
    c = Contract.from_json(raw)
    assert c.inference is None and c.inference_mode == "pog" and c.policy_input == "sample"
    assert c.step_window == 0 and "inference" not in c.to_json()
    assert c.control_period == raw["control_period"] == raw["robot"]["control_period"]


def test_fixture_bundles_round_trip(bundle_dir: Path, other_bundle_dir: Path,
                                    twin_bundle: Path) -> None:
    for bundle in (bundle_dir, other_bundle_dir, twin_bundle):
        c = _assert_round_trip(bundle)
        assert c.inference is not None  # this exporter writes every section
    twin = read_contract(twin_bundle)
    assert twin.robot is not None and twin.command_interface == "effort"
    assert twin.obs_units == ("rad",) * 3 + ("rad/s",) * 3


def test_pooled_bundle_round_trips(tmp_path: Path) -> None:
    from pearl_robot.export.exporter import ExportConfig
    from pearl_robot.export.testing import write_test_bundle

    write_test_bundle(tmp_path / "pooled", "point-robot", inference="pooled",
                      policy_input="belief", hidden_sizes=(16,), encoder_hidden_sizes=(16,),
                      feature_dim=8, head_hidden_sizes=(16,), decoder_hidden_sizes=(8,),
                      embedding_batch_size=16,
                      config=ExportConfig(random_rows=32, record_steps=20))
    c = _assert_round_trip(tmp_path / "pooled")
    assert c.inference_mode == "pooled" and c.step_window > 0 and c.step_features > 0
    assert c.policy_latent_dim == 2 * c.latent_dim


OPTIONAL_LATER = {
    "action.joints": (lambda r: r["action"].pop("joints"),
                      lambda c: c.action_joints == ("dx", "dy") and c.action.joints is None),
    "action.interface": (lambda r: r["action"].pop("interface"),
                         lambda c: c.command_interface == UNSPECIFIED),
    "context units": (lambda r: [f.pop("units") for f in r["context"]["fields"]],
                      lambda c: all(f.units is None for f in c.context_fields)),
    "golden.rows": (lambda r: r["golden"].pop("rows"), lambda c: c.golden.rows is None),
    "golden.file": (lambda r: r["golden"].pop("file"), lambda c: c.golden.file is None),
    "posterior info": (lambda r: [r["posterior"].pop(k) for k in (
        "train_context_size", "eval_context_steps", "log_std_range")],
        lambda c: c.posterior.log_std_range is None),
    "inference": (lambda r: r.pop("inference"), lambda c: c.inference_mode == "pog"),
}


@pytest.mark.parametrize("absent", list(OPTIONAL_LATER))
def test_fields_added_later_may_be_absent(bundle_copy: Path, absent: str) -> None:
    """A schema-1 contract written before a field existed loads, reads the field as the
    module doc says, and round-trips without inventing it."""
    edit, check = OPTIONAL_LATER[absent]
    raw = _raw(bundle_copy)
    edit(raw)
    seal_contract(bundle_copy, raw)
    c = _assert_round_trip(bundle_copy)
    assert check(c)
    load_bundle(bundle_copy)


@pytest.mark.parametrize("schema", ["pearl_robot.bundle/0", "pearl_robot.bundle/2", "other"])
def test_other_schemas_are_refused_with_how_to_re_export(bundle_copy: Path, schema: str
                                                         ) -> None:
    raw = _raw(bundle_copy)
    raw["schema"] = schema
    seal_contract(bundle_copy, raw)
    with pytest.raises(BundleContractError, match=rf"schema '{schema}' is not supported.*"
                                                  r"pearl-robot export CHECKPOINT OUT_DIR"):
        load_bundle(bundle_copy)


def test_fields_a_newer_exporter_adds_are_kept(bundle_copy: Path) -> None:
    """Additive fields (top level and inside sections) load and are written back unchanged."""
    raw = _raw(bundle_copy)
    raw["calibration"] = {"by": "a newer exporter"}
    raw["observation"]["frames"] = ["base", "base"]
    raw["graphs"]["actor"]["providers"] = ["CPU"]
    raw["golden"]["seed"] = 3
    sealed = seal_contract(bundle_copy, raw)
    c = _assert_round_trip(bundle_copy)
    assert c.extra == {"calibration": {"by": "a newer exporter"}}
    assert c.to_json() == sealed


@pytest.mark.parametrize("where, edit, needle", [
    ("observation.units", lambda r: r["observation"].__setitem__("units", ["m"]),
     r"observation\.units has 1 entries for 2 names"),
    ("observation.units type", lambda r: r["observation"].__setitem__("units", ["m", 1]),
     r"observation\.units must be strings"),
    ("control_period", lambda r: r.pop("control_period"), "missing field control_period"),
    ("control_period > 0", lambda r: r.__setitem__("control_period", 0),
     "control_period must be > 0"),
    ("control_period type", lambda r: r.__setitem__("control_period", "0.05"),
     "control_period must be float"),
    ("action.low", lambda r: r["action"].__setitem__("low", [0, True]),
     r"action\.low must be 2 finite numbers"),
    ("reward_key", lambda r: r["context"].__setitem__("reward_key", 3),
     r"context\.reward_key must be a string"),
    ("provenance", lambda r: r.__setitem__("provenance", [1]), "provenance must be an object"),
    ("files", lambda r: r["files"].__setitem__("actor.onnx", 5), "files must map names"),
])
def test_bad_fields_are_named(bundle_copy: Path, where: str, edit, needle: str  # noqa: ANN001
                              ) -> None:
    raw = _raw(bundle_copy)
    edit(raw)
    with pytest.raises(BundleContractError, match=needle):
        Contract.from_json(raw)
    if where != "files":  # sealing rewrites files; the rest is refused from disk the same way
        seal_contract(bundle_copy, raw)
        with pytest.raises(BundleContractError, match=needle):
            read_contract(bundle_copy)


def test_numbers_keep_their_json_type(bundle_copy: Path) -> None:
    """An integer written by hand stays an integer, so the recorded hash still matches."""
    raw = _raw(bundle_copy)
    raw["action"]["low"] = [-1, -1]
    raw["action"]["high"] = [1, 1]
    seal_contract(bundle_copy, raw)
    c = _assert_round_trip(bundle_copy)
    assert c.action.low == (-1, -1) and c.action_low.tolist() == [-1.0, -1.0]


def test_limits_are_read_only_arrays(bundle_dir: Path) -> None:
    c = read_contract(bundle_dir)
    with pytest.raises(ValueError):
        c.action_low[0] = 5.0
    assert c.action_low is c.action_low  # computed once


def test_nan_is_still_refused_by_the_json_reader() -> None:
    with pytest.raises(BundleContractError, match="NaN at line 1"):
        parse_contract_json('{"control_period": NaN}')


def test_the_unspecified_value_is_one_word() -> None:
    """tasks (which cannot import runtime) and the contract declare the same value."""
    assert interface.UNSPECIFIED == UNSPECIFIED


def test_a_copy_is_not_the_same_contract(bundle_dir: Path) -> None:
    raw = _raw(bundle_dir)
    other = copy.deepcopy(raw)
    other["control_period"] = 0.1
    assert Contract.from_json(raw) != Contract.from_json(other)
