"""Model bundle: the contract between the trainer and the robot, and its validating loader.

A bundle is a directory written by ``pearl-robot export`` (``pearl_robot.export``)::

    actor.onnx     obs [B, obs_dim] (physical), z [B, latent], eps [B, action_dim]
                   -> action_mean [B, action_dim], action_sample [B, action_dim] (physical)
    encoder.onnx   transition [B, context_dim] (physical, fields in contract order)
                   -> mu [B, latent], var [B, latent]   (one Gaussian factor per row)
                   (the belief's step graph for inference ``pooled`` and ``particles``:
                   contract.INFERENCE_MODES, docs/architecture.md)
    contract.json  schema, names/units/limits, control period, latent size, context fields,
                   posterior convention, task family, provenance, sha256 of every other file
                   and of its own canonical content (typed: ``runtime.contract.Contract``)
    golden.npz     recorded inputs and the outputs the exporter's torch model gave for them
    checkpoint.pt  optional (``export --with-checkpoint``): the weights-only checkpoint the
                   bundle was exported from, for warm-starting a retrain; never loaded here,
                   only hash-checked like every file the contract lists

``load_bundle`` refuses a bundle at the first problem with one typed error per kind of
failure (all subclasses of :class:`BundleError`), naming the file and what is wrong, so an
operator reading one log line knows which artefact to regenerate. It never imports torch.

The ONNX sessions are created here with the settings measured fastest for one small MLP at
batch 1 on a 2-core machine (``reference/machine-limits.md``): one intra-op and one inter-op
thread, sequential execution, all graph optimizations.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pearl_robot.runtime.contract import (
    ACTOR_FILE,
    ACTOR_INPUTS,
    ACTOR_OUTPUTS,
    BUNDLE_SCHEMA,
    CHECKPOINT_FILE,
    CONTEXT_FIELD_NAMES,
    CONTRACT_FILE,
    ENCODER_FILE,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    GOLDEN_FILE,
    HASHED_FILES,
    INFERENCE_MODES,
    OPTIONAL_FILES,
    PARTICLE_STEP_INPUTS,
    PARTICLE_STEP_OUTPUTS,
    POSTERIOR_CONVENTIONS,
    STEP_INPUTS,
    STEP_OUTPUTS,
    BundleContractError,
    BundleError,
    ContextField,
    Contract,
    contract_content_sha256,
    contract_graph_io,
    declared_graph_io,
    parse_contract,
    parse_contract_json,
)

MAX_FILE_BYTES = {CONTRACT_FILE: 16 << 20, ACTOR_FILE: 256 << 20, ENCODER_FILE: 256 << 20,
                  GOLDEN_FILE: 64 << 20, CHECKPOINT_FILE: 64 << 20}
"""Largest accepted size of each bundle file (another listed file: 16 MiB). The exported MLPs
are well under 10 MiB, a contract with its task list under 1 MiB and the weights-only
checkpoint of the shipped model about 1 MiB; the bounds only keep a wrong file (a disk image,
a log) from being read into memory on the robot."""

GOLDEN_KEYS = ("actor_obs", "actor_z", "actor_eps", "actor_action_mean", "actor_action_sample",
               "encoder_transition", "encoder_mu", "encoder_var")
GOLDEN_STEP_KEYS = ("encoder_ring", "encoder_count", "encoder_ring_out", "encoder_count_out")
"""Golden arrays a step-state encoder adds (states recorded along real context sequences)."""
GOLDEN_PARTICLE_KEYS = ("encoder_log_w", "encoder_log_w_out", "encoder_loglik")
"""Golden arrays of a particle step encoder, in place of ``encoder_mu``/``encoder_var`` (it
outputs log-weights, not a Gaussian; log-weights recorded along real context sequences)."""

__all__ = [  # the contract's names, re-exported: importers of this module keep working
    "ACTOR_FILE", "ACTOR_INPUTS", "ACTOR_OUTPUTS", "BUNDLE_SCHEMA", "CHECKPOINT_FILE",
    "CONTEXT_FIELD_NAMES", "CONTRACT_FILE", "ENCODER_FILE", "ENCODER_INPUTS", "ENCODER_OUTPUTS",
    "GOLDEN_FILE", "HASHED_FILES", "INFERENCE_MODES", "OPTIONAL_FILES", "PARTICLE_STEP_INPUTS",
    "PARTICLE_STEP_OUTPUTS", "POSTERIOR_CONVENTIONS", "STEP_INPUTS", "STEP_OUTPUTS",
    "BundleContractError", "BundleError", "ContextField", "Contract", "contract_content_sha256",
    "contract_graph_io", "declared_graph_io", "parse_contract", "parse_contract_json",
    "GOLDEN_KEYS", "GOLDEN_PARTICLE_KEYS", "GOLDEN_STEP_KEYS", "MAX_FILE_BYTES", "Bundle",
    "BundleCompatibilityError",
    "BundleFileMissingError", "BundleFileTypeError", "BundleGoldenError", "BundleGraphError",
    "BundleHashError", "BundleNotFoundError", "BundleRobotMismatchError", "BundleShapeError",
    "RobotExpectation", "check_compatible", "check_files", "check_robot", "load_bundle",
    "read_bundle_file", "read_checked_file", "read_contract", "read_contract_json", "run_golden",
    "seal_contract",
    "session_options", "sha256_file",
]


class BundleNotFoundError(BundleError):
    """The bundle directory does not exist or is not a directory."""


class BundleFileMissingError(BundleError):
    """A file the bundle must contain is missing."""


class BundleFileTypeError(BundleError):
    """A bundle file is not a regular file (a FIFO, a device, a socket, a directory, or a link
    to one) or is larger than :data:`MAX_FILE_BYTES` allows; it is never read."""


class BundleHashError(BundleError):
    """A file's sha256 (or the contract's own content hash) differs from the recorded one:
    the file was corrupted or edited after export."""


class BundleShapeError(BundleError):
    """An ONNX graph's input/output names, element types or shapes disagree with the contract."""


class BundleGraphError(BundleError):
    """onnxruntime cannot load or run a graph."""


class BundleGoldenError(BundleError):
    """The graphs do not reproduce the golden vectors recorded at export."""


class BundleRobotMismatchError(BundleError):
    """The contract does not fit the robot it is meant to drive (joint names or order, command
    limits, control period, observation names)."""


class BundleCompatibilityError(BundleError):
    """A hot-swap candidate does not speak the same interface as the running bundle."""


# --------------------------------------------------------------------------- hashing helpers

def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def seal_contract(bundle_dir: str | Path, contract: Contract | dict[str, Any]
                  ) -> dict[str, Any]:
    """Fill ``files`` (sha256 of every hashed and optional file present in ``bundle_dir``) and
    ``contract_sha256``, and write ``contract.json`` (fsynced); returns the JSON written.
    The exporter seals a typed :class:`Contract`; tests seal deliberately altered JSON to
    build consistently hashed but wrong bundles."""
    bundle_dir = Path(bundle_dir)
    contract = contract.to_json() if isinstance(contract, Contract) else dict(contract)
    contract["files"] = {name: sha256_file(bundle_dir / name)
                         for name in HASHED_FILES + OPTIONAL_FILES
                         if (bundle_dir / name).is_file()}
    contract["contract_sha256"] = contract_content_sha256(contract)
    path = bundle_dir / CONTRACT_FILE
    with open(path, "w", encoding="utf-8") as f:
        json.dump(contract, f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return contract


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def read_bundle_file(bundle_dir: str | Path, name: str, limit: int | None = None) -> bytes:
    """The bytes of one bundle file, read only when it is a regular file within its bound.

    A FIFO would block ``open``/``read`` forever, a device (``/dev/zero``) would read without
    end, and opening a serial device can toggle its control lines: so the path is ``stat``-ed
    (following links) before it is opened, opened non-blocking without becoming a controlling
    terminal, checked again on the open descriptor (the path may have been swapped in
    between), and read to at most ``limit`` + 1 bytes."""
    path = Path(bundle_dir) / name
    limit = MAX_FILE_BYTES.get(name, 16 << 20) if limit is None else limit
    try:
        st = os.stat(path)
    except FileNotFoundError:
        what = "a link to nothing" if os.path.islink(path) else "missing"
        raise BundleFileMissingError(f"{bundle_dir}: {name} is {what}") from None
    except OSError as exc:
        raise BundleFileTypeError(f"{bundle_dir}: {name} cannot be read ({exc.strerror})"
                                  ) from None

    def refuse(mode: int, size: int) -> None:
        if not stat.S_ISREG(mode):
            link = " (through a symbolic link)" if os.path.islink(path) else ""
            raise BundleFileTypeError(f"{bundle_dir}: {name} is {_kind(mode)}{link}, not a "
                                      f"regular file; refused without reading it")
        if size > limit:
            raise BundleFileTypeError(f"{bundle_dir}: {name} is {size} bytes, over the "
                                      f"{limit >> 20} MiB a bundle file may have")

    refuse(st.st_mode, st.st_size)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BundleFileMissingError(f"{bundle_dir}: {name} is missing") from None
    except OSError as exc:
        raise BundleFileTypeError(f"{bundle_dir}: {name} cannot be opened ({exc.strerror})"
                                  ) from None
    try:
        fst = os.fstat(fd)
        refuse(fst.st_mode, fst.st_size)
        chunks, total = [], 0
        while True:
            block = os.read(fd, min(1 << 20, limit + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
            if total > limit:
                raise BundleFileTypeError(f"{bundle_dir}: {name} grew past the "
                                          f"{limit >> 20} MiB a bundle file may have while "
                                          f"being read")
        return b"".join(chunks)
    except OSError as exc:
        raise BundleFileTypeError(f"{bundle_dir}: {name} cannot be read ({exc.strerror})"
                                  ) from None
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- robot expectation

@dataclass(frozen=True)
class RobotExpectation:
    """What the robot declares, checked against the contract at load and at every hot-swap."""

    action_names: tuple[str, ...]
    """Joint names in command order (``RobotSpec.joint_names``); compared with the contract's
    ``action.joints`` (or, failing that, its command names)."""
    action_low: tuple[float, ...] | None = None
    """The robot's lowest allowed command per joint; the bundle's limits must lie inside."""
    action_high: tuple[float, ...] | None = None
    """The robot's highest allowed command per joint."""
    control_period: float | None = None
    """The robot loop's period in seconds; must equal the contract's (1e-6 relative)."""
    obs_names: tuple[str, ...] | None = None
    """Observation entries the robot side can build, in order (None: not checked)."""
    command_interface: str | None = None
    """``effort``, ``position``, ...; None: not checked."""

    @classmethod
    def from_robot_spec(cls, spec: Any) -> RobotExpectation:
        """From ``pearl_robot.robot.description.RobotSpec`` (duck-typed: ``joints`` with
        ``name`` and ``effort_max``, ``control_period``, ``command_interface``)."""
        joints = tuple(spec.joints)
        effort = [float(j.effort_max) for j in joints]
        return cls(action_names=tuple(j.name for j in joints),
                   action_low=tuple(-e for e in effort), action_high=tuple(effort),
                   control_period=float(spec.control_period),
                   command_interface=str(getattr(spec, "command_interface", None) or "") or None)


def check_robot(contract: Contract, robot: RobotExpectation) -> None:
    """BundleRobotMismatchError naming the first disagreement between bundle and robot."""
    if tuple(robot.action_names) not in (contract.action_joints, contract.action_names):
        diff = next((i for i, (a, b) in enumerate(zip(robot.action_names,
                                                       contract.action_joints)) if a != b),
                    min(len(robot.action_names), len(contract.action_joints)))
        raise BundleRobotMismatchError(
            f"bundle commands joints {list(contract.action_joints)} but the robot declares "
            f"{list(robot.action_names)} (first difference at index {diff}); the bundle was "
            f"trained for another robot or joint order")
    if robot.command_interface and contract.command_interface not in ("unspecified",
                                                                      robot.command_interface):
        raise BundleRobotMismatchError(
            f"bundle commands {contract.command_interface!r} but the robot takes "
            f"{robot.command_interface!r}")
    for side, lim, mine in (("low", robot.action_low, contract.action_low),
                            ("high", robot.action_high, contract.action_high)):
        if lim is None:
            continue
        lim_a = np.asarray(lim, dtype=np.float64)
        if lim_a.shape != mine.shape:
            raise BundleRobotMismatchError(f"robot action_{side} has {lim_a.size} entries, "
                                           f"bundle has {mine.size}")
        tol = 1e-9 * np.maximum(1.0, np.abs(lim_a))
        bad = (mine < lim_a - tol) if side == "low" else (mine > lim_a + tol)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise BundleRobotMismatchError(
                f"bundle command limit action.{side}[{contract.action_names[i]}] = {mine[i]:g} "
                f"is outside the robot's limit {lim_a[i]:g}")
    if robot.control_period is not None and not math.isclose(
            robot.control_period, contract.control_period, rel_tol=1e-6):
        raise BundleRobotMismatchError(
            f"bundle was trained at a control period of {contract.control_period:g} s but the "
            f"robot runs at {robot.control_period:g} s")
    if robot.obs_names is not None and tuple(robot.obs_names) != contract.obs_names:
        raise BundleRobotMismatchError(
            f"bundle observes {list(contract.obs_names)} but the robot provides "
            f"{list(robot.obs_names)}")


def check_compatible(running: Contract, candidate: Contract) -> None:
    """A hot-swap candidate must keep the interface the control loop is wired to."""
    for attr in ("obs_names", "action_names", "command_interface"):
        if getattr(running, attr) != getattr(candidate, attr):
            raise BundleCompatibilityError(
                f"candidate bundle's {attr} {getattr(candidate, attr)!r} differs from the "
                f"running bundle's {getattr(running, attr)!r}")
    if running.latent_dim != candidate.latent_dim:
        # the transition stream and the episode log carry the belief (2 * latent + 1 entries
        # per transition) in a layout fixed when the node starts: a swap may change the
        # inference mode, not the size of what it logs
        raise BundleCompatibilityError(
            f"candidate bundle's latent_dim {candidate.latent_dim} differs from the running "
            f"bundle's {running.latent_dim}: the transition stream and the episode log keep "
            f"the belief layout of the running bundle; restart the node with the candidate "
            f"to change it")
    if not math.isclose(running.control_period, candidate.control_period, rel_tol=1e-6):
        raise BundleCompatibilityError(
            f"candidate bundle's control period {candidate.control_period:g} s differs from "
            f"the running {running.control_period:g} s")


# --------------------------------------------------------------------------- loading

def session_options() -> Any:
    """The onnxruntime options of the control path (see module docstring)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def _session(name: str, model: bytes) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model, sess_options=session_options(),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own (non-exported) exception classes
        raise BundleGraphError(f"{name}: onnxruntime cannot load the graph "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})"
                               ) from exc


def _check_io(sess: Any, fname: str, kind: str,
              expected: dict[str, int | tuple[int, ...]]) -> None:
    """Names, element type (float32) and the fixed trailing dimension of each graph I/O."""
    got = sess.get_inputs() if kind == "input" else sess.get_outputs()
    names = [g.name for g in got]
    if names != list(expected):
        raise BundleShapeError(f"{fname}: {kind} names {names} differ from the contract's "
                               f"{list(expected)}")
    for g in got:
        if g.type != "tensor(float)":
            raise BundleShapeError(f"{fname}: {kind} {g.name!r} has type {g.type}, expected "
                                   f"tensor(float)")
        shape = list(g.shape)
        want = expected[g.name]
        tail = list(want) if isinstance(want, tuple) else [want]
        if len(shape) != 1 + len(tail) or shape[1:] != tail:
            raise BundleShapeError(f"{fname}: {kind} {g.name!r} has shape {shape}, expected "
                                   f"[batch, {', '.join(map(str, tail))}]")
        if isinstance(shape[0], int) and shape[0] != 1:
            raise BundleShapeError(f"{fname}: {kind} {g.name!r} has a fixed batch of "
                                   f"{shape[0]}, expected a dynamic batch or 1")


@dataclass
class Bundle:
    """A validated bundle: parsed contract and ready onnxruntime sessions."""

    path: Path
    """The bundle directory."""
    contract: Contract
    """The parsed contract."""
    actor: Any
    """onnxruntime.InferenceSession of actor.onnx."""
    encoder: Any
    """onnxruntime.InferenceSession of encoder.onnx."""
    golden_max_error: float
    """Largest |onnx - golden| seen at load (for the log)."""

    @property
    def sha256(self) -> str:
        """The bundle's identity: the contract's content hash (it covers every file's hash)."""
        return self.contract.contract_sha256


def read_contract_json(bundle_dir: str | Path) -> Any:
    """``contract.json`` as parsed JSON (regular file, size bound, strict numbers); not yet
    validated or hash-checked."""
    blob = read_bundle_file(bundle_dir, CONTRACT_FILE)
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleContractError(f"{CONTRACT_FILE} is not valid JSON (not UTF-8: {exc})"
                                  ) from None
    return parse_contract_json(text)


def read_contract(bundle_dir: str | Path) -> Contract:
    """Parse and hash-check ``contract.json`` alone (no graphs loaded)."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.exists():
        raise BundleNotFoundError(f"bundle directory not found: {bundle_dir}")
    if not bundle_dir.is_dir():
        raise BundleNotFoundError(f"bundle path is not a directory: {bundle_dir}")
    raw = read_contract_json(bundle_dir)
    if not isinstance(raw, dict):
        raise BundleContractError(f"{CONTRACT_FILE}: top level must be an object")
    # the hash first: a corrupted byte is reported as corruption, not as the odd field it made
    want = raw.get("contract_sha256")
    if not isinstance(want, str):
        raise BundleContractError(f"{CONTRACT_FILE}: missing field contract_sha256")
    got = contract_content_sha256(raw)
    if got != want:
        raise BundleHashError(f"{CONTRACT_FILE}: content hash {got[:16]}... differs from the "
                              f"recorded contract_sha256 {want[:16]}... (edited or corrupted)")
    return parse_contract(raw)


def read_checked_file(bundle_dir: Path, contract: Contract, name: str) -> bytes:
    """The bytes of the listed file ``name``, read as :func:`read_bundle_file` reads (its
    typed errors), after checking them against the contract's sha256 (BundleHashError)."""
    blob = read_bundle_file(bundle_dir, name)
    got = hashlib.sha256(blob).hexdigest()
    if got != contract.files.get(name):
        raise BundleHashError(f"{name}: sha256 {got[:16]}... differs from the contract's "
                              f"{str(contract.files.get(name))[:16]}... (corrupted or "
                              f"replaced after export)")
    return blob


def check_files(bundle_dir: Path, contract: Contract) -> dict[str, bytes]:
    """Every file the contract lists present and matching its recorded sha256; returns the
    bytes of the :data:`HASHED_FILES` (the ones the loader uses).

    Each file is read once and the *hashed bytes* are what the loader uses (sessions are
    built from them), so a bundle replaced on disk while it is being validated (an export
    with ``--force`` to the same path) can never mix checked and unchecked content. The
    other listed files (``checkpoint.pt``) are checked too, though the robot never uses
    them: the bundle's identity covers every file it lists, and a bundle with one edited
    file is an edited bundle, refused whole, like the hot-swap candidate it may become."""
    data = {name: read_checked_file(bundle_dir, contract, name) for name in HASHED_FILES}
    for name in contract.files:
        if name not in data:
            read_checked_file(bundle_dir, contract, name)
    return data


def _load_golden(blob: bytes, contract: Contract) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            data = {k: np.asarray(z[k]) for k in z.files}
    except Exception as exc:  # zipfile/ValueError/OSError from a damaged archive
        raise BundleGoldenError(f"{GOLDEN_FILE} is unreadable ({type(exc).__name__}: "
                                f"{exc})") from exc
    pooled = contract.inference_mode == "pooled"
    particles = contract.inference_mode == "particles"
    keys = GOLDEN_KEYS + (GOLDEN_STEP_KEYS if pooled else ())
    if particles:  # log-weights in place of the Gaussian's mean and variance
        keys = tuple(k for k in GOLDEN_KEYS if k not in ("encoder_mu", "encoder_var")) + \
            GOLDEN_PARTICLE_KEYS
    missing = [k for k in keys if k not in data]
    if missing:
        raise BundleGoldenError(f"{GOLDEN_FILE} lacks arrays {missing}")
    o, a, L, c = contract.obs_dim, contract.action_dim, contract.latent_dim, contract.context_dim
    widths: dict[str, int | tuple[int, ...]] = {
        "actor_obs": o, "actor_z": contract.policy_latent_dim, "actor_eps": a,
        "actor_action_mean": a, "actor_action_sample": a, "encoder_transition": c,
        "encoder_mu": L, "encoder_var": L}
    if particles:
        del widths["encoder_mu"], widths["encoder_var"]
        widths.update({k: contract.num_particles for k in GOLDEN_PARTICLE_KEYS})
    if pooled:
        state = (contract.step_window, contract.step_features)
        widths.update(encoder_ring=state, encoder_ring_out=state, encoder_count=1,
                      encoder_count_out=1)
    rows = contract.golden.rows
    for k, w in widths.items():
        tail = w if isinstance(w, tuple) else (w,)
        if data[k].shape[1:] != tail or data[k].shape[0] == 0:
            raise BundleGoldenError(f"{GOLDEN_FILE}: array {k} has shape {data[k].shape}, "
                                    f"expected [rows>0, {', '.join(map(str, tail))}]")
        if rows is not None and data[k].shape[0] != rows:
            raise BundleGoldenError(f"{GOLDEN_FILE}: array {k} has {data[k].shape[0]} rows, "
                                    f"the contract's golden.rows says {rows}")
    return data


def _golden_compare(name: str, got: np.ndarray, want: np.ndarray, atol: float,
                    rtol: float) -> float:
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = atol + rtol * np.abs(want.astype(np.float64))
    if not np.all(np.isfinite(got)) or np.any(err > bound):
        i = np.unravel_index(int(np.nanargmax(err - bound)), err.shape) if np.all(
            np.isfinite(got)) else np.unravel_index(int(np.argmin(np.isfinite(got))), got.shape)
        raise BundleGoldenError(
            f"golden mismatch on {name}: row {i[0]} entry {i[1]} gives {got[i]:.6g}, the "
            f"export recorded {want[i]:.6g} (tolerance {atol:g} + {rtol:g}*|x|); the graph or "
            f"the golden vectors do not belong together")
    return float(err.max())


def run_golden(actor: Any, encoder: Any, golden: dict[str, np.ndarray], contract: Contract
               ) -> float:
    """Run the golden inputs through both sessions; the largest error (BundleGoldenError)."""
    try:
        mean, sample = actor.run(list(ACTOR_OUTPUTS), {
            "obs": golden["actor_obs"].astype(np.float32),
            "z": golden["actor_z"].astype(np.float32),
            "eps": golden["actor_eps"].astype(np.float32)})
        if contract.inference_mode == "particles":
            log_w, loglik = encoder.run(list(PARTICLE_STEP_OUTPUTS), {
                PARTICLE_STEP_INPUTS[0]: golden["encoder_transition"].astype(np.float32),
                PARTICLE_STEP_INPUTS[1]: golden["encoder_log_w"].astype(np.float32)})
        elif contract.inference_mode == "pooled":
            ring, count, mu, var = encoder.run(list(STEP_OUTPUTS), {
                "transition": golden["encoder_transition"].astype(np.float32),
                "ring": golden["encoder_ring"].astype(np.float32),
                "count": golden["encoder_count"].astype(np.float32)})
        else:
            mu, var = encoder.run(list(ENCODER_OUTPUTS), {
                "transition": golden["encoder_transition"].astype(np.float32)})
    except Exception as exc:
        raise BundleGraphError(f"running the golden inputs failed ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:300]})") from exc
    atol, rtol = contract.golden_atol, contract.golden_rtol
    actor_err = max(
        _golden_compare("actor.action_mean", mean, golden["actor_action_mean"], atol, rtol),
        _golden_compare("actor.action_sample", sample, golden["actor_action_sample"], atol,
                        rtol))
    if contract.inference_mode == "particles":
        return max(actor_err,
                   _golden_compare("encoder.log_w_out", log_w, golden["encoder_log_w_out"],
                                   atol, rtol),
                   _golden_compare("encoder.loglik", loglik, golden["encoder_loglik"], atol,
                                   rtol))
    step_err = 0.0
    if contract.inference_mode == "pooled":
        step_err = max(_golden_compare("encoder.ring_out", ring.reshape(len(ring), -1),
                                       golden["encoder_ring_out"].reshape(len(ring), -1),
                                       atol, rtol),
                       _golden_compare("encoder.count_out", count, golden["encoder_count_out"],
                                       atol, rtol))
    return max(step_err, actor_err,
               _golden_compare("encoder.mu", mu, golden["encoder_mu"], atol, rtol),
               _golden_compare("encoder.var", var, golden["encoder_var"], atol, rtol))


def load_bundle(bundle_dir: str | Path, robot: RobotExpectation | None = None,
                yield_point: Callable[[], None] | None = None) -> Bundle:
    """Load and fully validate a bundle: contract, file hashes, robot fit, graph I/O, golden.

    The checks run cheapest first, so a wrong robot or a corrupt file is reported before any
    graph is loaded. Raises a :class:`BundleError` subclass naming the first problem.

    ``yield_point`` is called before each step that holds the GIL for milliseconds (creating
    an onnxruntime session does): a hot-swap validation thread uses it to wait until a control
    tick has just finished, so the step runs in the idle part of the control period."""
    step = yield_point or (lambda: None)
    bundle_dir = Path(bundle_dir)
    step()
    contract = read_contract(bundle_dir)
    blobs = check_files(bundle_dir, contract)
    if robot is not None:
        check_robot(contract, robot)
    step()
    actor = _session(ACTOR_FILE, blobs[ACTOR_FILE])
    step()
    encoder = _session(ENCODER_FILE, blobs[ENCODER_FILE])
    io_ = contract_graph_io(contract)
    for sess, (fname, tensors) in ((actor, io_["actor"]), (encoder, io_["encoder"])):
        _check_io(sess, fname, "input", tensors["inputs"])
        _check_io(sess, fname, "output", tensors["outputs"])
    step()
    golden = _load_golden(blobs[GOLDEN_FILE], contract)
    err = run_golden(actor, encoder, golden, contract)
    return Bundle(bundle_dir, contract, actor, encoder, err)
