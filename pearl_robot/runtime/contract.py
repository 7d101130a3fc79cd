"""The bundle contract as one typed value: what ``contract.json`` says, written and read here.

The exporter (``pearl_robot.export``) builds a :class:`Contract` from typed inputs (the
networks and the checkpoint's :class:`~pearl_robot.tasks.interface.EnvInterface`) and writes
``Contract.to_json()``; the robot's loader reads the file back with :meth:`Contract.from_json`.
The two are inverse on every contract this package writes: ``from_json(d).to_json() == d``,
number types and key order included, so the content hash (``contract_sha256``, the bundle's
identity) of a parsed contract is the one recorded in the file. Keys a reader does not know
(fields a newer exporter added) are kept in each section's ``extra`` and written back, so a
round trip never drops what another version wrote.

Each section of the file is one frozen dataclass with its own ``from_json`` (which names the
offending field in a :class:`BundleContractError`) and ``to_json``. The flat attributes the
control loop reads (``contract.obs_names``, ``contract.control_period``, ...) are properties
over the sections.

Schema ``pearl_robot.bundle/1`` is the only one there has been. Within it some fields came
later; a contract written before them still loads, read as follows (this is the migration, and
its ``to_json`` writes them back as absent, so its hash still holds):

- ``inference`` absent: mode ``pog``, policy input ``sample`` (the only choice there was);
- ``inference.mode`` ``particles`` came with its own fields (``num_particles``,
  ``reward_std``, ``particles``), all required for that mode; a runtime that predates it
  refuses the mode by name;
- ``action.joints`` absent: each command's name up to its last ``.``;
- ``action.interface`` absent: ``unspecified`` (the robot fit does not check it);
- ``context.fields[i].units`` absent: ``physical``;
- ``golden.rows`` and ``golden.file`` absent: not cross-checked (the file is ``golden.npz``);
- ``posterior.train_context_size``, ``eval_context_steps``, ``log_std_range`` absent:
  informative only, not used by the runtime.

Any other schema string is refused with a message saying how to re-export the bundle.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from pearl_robot.errors import PearlRobotError

BUNDLE_SCHEMA = "pearl_robot.bundle/1"
"""Schema string written to and required in ``contract.json``."""
ACTOR_FILE = "actor.onnx"
ENCODER_FILE = "encoder.onnx"
CONTRACT_FILE = "contract.json"
GOLDEN_FILE = "golden.npz"
HASHED_FILES = (ACTOR_FILE, ENCODER_FILE, GOLDEN_FILE)
"""Files every bundle has and the contract records the sha256 of (the contract hashes its own
content)."""
CHECKPOINT_FILE = "checkpoint.pt"
"""The weights-only checkpoint a bundle exported with ``--with-checkpoint`` carries, so the
morning's retrain can warm-start from the model the robot runs wherever the bundle goes (the
path in ``provenance.checkpoint`` is on the machine that trained it). Never loaded by the
runtime; hash-checked like every file the contract lists."""
OPTIONAL_FILES = (CHECKPOINT_FILE,)
"""Files a bundle may have; when present at export, listed in ``files`` and then required."""

ACTOR_INPUTS = ("obs", "z", "eps")
ACTOR_OUTPUTS = ("action_mean", "action_sample")
ENCODER_INPUTS = ("transition",)
ENCODER_OUTPUTS = ("mu", "var")
STEP_INPUTS = ("transition", "ring", "count")
"""Inputs of a step-state encoder graph (inference ``pooled``): the newest transition, the
belief's state (the newest ``window`` per-transition features, oldest first, and how many of
them are in the context)."""
STEP_OUTPUTS = ("ring_out", "count_out", "mu", "var")
"""Outputs of a step-state encoder graph: the next state and the belief it holds."""
PARTICLE_STEP_INPUTS = ("transition", "log_w")
"""Inputs of a particle step graph (inference ``particles``): the newest transition and the
particles' log-weights before it."""
PARTICLE_STEP_OUTPUTS = ("log_w_out", "loglik")
"""Outputs of a particle step graph: ``log_w + loglik`` and ``loglik``, the transition's
log-likelihood under each particle (what a windowed belief keeps to subtract later)."""
INFERENCE_MODES = ("pog", "pooled", "particles")
"""Belief modes a bundle can hold (``contract.inference.mode``; absent: ``pog``, the
bundles written before there was a choice). ``particles``: a model trained with inference
``pooled`` and the ``particles`` refinement, whose robot-side belief is the particle set."""
POLICY_INPUTS = ("sample", "belief")
"""What the actor's ``z`` input holds (``contract.inference.policy_input``)."""
CONTEXT_FIELD_NAMES = ("obs", "action", "reward", "next_obs")
"""Context row fields the runtime knows how to fill (in the order the contract lists them)."""
POSTERIOR_CONVENTIONS = ("pog-no-prior", "pog-with-prior")
"""``pog-no-prior``: product of the per-transition factors only, the N(0, I) prior enters the
training KL only and is the belief when the context is empty (``core.posterior``).
``pog-with-prior``: the prior is one more factor in the product."""
UNSPECIFIED = "unspecified"
"""The declared value of a unit or command interface the environment has none for (an abstract
benchmark's coordinates): a value the contract states, not a guess; see docs/architecture.md."""
REEXPORT_HINT = ("re-export the bundle with this pearl_robot (`pearl-robot export CHECKPOINT "
                 "OUT_DIR`; the checkpoint is the bundle's own checkpoint.pt when it has one, "
                 "else the contract's provenance.checkpoint) or update pearl_robot on the "
                 "robot")
"""What an operator does about a contract this runtime cannot read."""


class BundleError(PearlRobotError):
    """A model bundle cannot be used; the message names the file and the problem."""


class BundleContractError(BundleError):
    """``contract.json`` is unreadable, of another schema, or has a missing or invalid field."""


# --------------------------------------------------------------------------- JSON helpers

def _plain_file_name(name: str) -> bool:
    """A name ``files`` may list: one entry of the bundle directory, not the contract. The
    loader opens every listed name, so ``../x``, ``/etc/x`` or ``.hidden`` would let an edited
    contract make the robot read files outside the bundle."""
    return bool(name) and name not in (".", "..", CONTRACT_FILE) and "/" not in name \
        and "\\" not in name and "\x00" not in name and not name.startswith(".")


def contract_content_sha256(contract: Mapping[str, Any]) -> str:
    """sha256 of the contract's canonical JSON without its own ``contract_sha256`` field.

    Hashing parsed content (sorted keys, no whitespace) instead of bytes lets a flipped byte
    that changes a value (a limit, a name) be detected, while the file stays human-editable
    for inspection."""
    body = {k: v for k, v in contract.items() if k != "contract_sha256"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


_NONFINITE_TOKEN = re.compile(r"(?<![\w.\"])(-?Infinity|NaN)(?![\w\"])")


def parse_contract_json(text: str) -> Any:
    """``json.loads`` for ``contract.json`` that refuses what is not JSON but Python's parser
    accepts: ``NaN``/``Infinity`` tokens and numbers that overflow to infinity (``1e400``).
    BundleContractError naming the line; never a bare ValueError."""

    def bad(token: str) -> float:
        m = _NONFINITE_TOKEN.search(text) if token in ("NaN", "Infinity", "-Infinity") else None
        pos = m.start() if m else text.find(token)
        line = text.count("\n", 0, pos) + 1 if pos >= 0 else "?"
        raise BundleContractError(f"{CONTRACT_FILE}: {token} at line {line} is not a valid "
                                  f"JSON number (NaN and Infinity are not JSON; every number "
                                  f"in a contract must be finite)")

    def number(token: str) -> float:
        x = float(token)
        return x if math.isfinite(x) else bad(token)

    try:
        return json.loads(text, parse_constant=bad, parse_float=number)
    except json.JSONDecodeError as exc:
        raise BundleContractError(f"{CONTRACT_FILE} is not valid JSON ({exc})") from None
    except RecursionError:
        raise BundleContractError(f"{CONTRACT_FILE} nests too deeply to be a contract"
                                  ) from None


def _fail(message: str) -> BundleContractError:
    return BundleContractError(f"{CONTRACT_FILE}: {message}")


def _object(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _fail(f"{where or 'top level'} must be an object, got {obj!r}"[:300])
    return obj


def _need(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    """``obj[key]`` of type ``kind`` (a JSON int is a valid float and is returned unchanged,
    so writing it back gives the same JSON); BundleContractError naming ``where + key``."""
    if not isinstance(obj, dict) or key not in obj:
        raise _fail(f"missing field {where}{key}")
    value = obj[key]
    number = kind is float and isinstance(value, int)
    if isinstance(value, bool) and kind is not bool or not (number or isinstance(value, kind)):
        raise _fail(f"field {where}{key} must be {getattr(kind, '__name__', kind)}, "
                    f"got {value!r}")
    return value


def _optional(obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...]
              ) -> Any:
    """Like :func:`_need`, but an absent key gives None."""
    return _need(obj, key, where, kind) if key in obj else None


def _names(obj: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    names = _need(obj, key, where, list)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise _fail(f"{where}{key} must be a non-empty list of non-empty strings, "
                    f"got {names!r}")
    if len(set(names)) != len(names):
        raise _fail(f"{where}{key} has duplicates: {names!r}")
    return tuple(names)


def _strings(obj: dict[str, Any], key: str, where: str, n: int, what: str) -> tuple[str, ...]:
    vals = _need(obj, key, where, list)
    if not all(isinstance(v, str) for v in vals):
        raise _fail(f"{where}{key} must be strings, got {vals!r}")
    if len(vals) != n:
        raise _fail(f"{where}{key} has {len(vals)} entries for {n} {what}")
    return tuple(vals)


def _numbers(obj: dict[str, Any], key: str, where: str, n: int) -> tuple[float, ...]:
    """``n`` finite JSON numbers, kept as written (an int stays an int)."""
    vals = _need(obj, key, where, list)
    ok = len(vals) == n and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                and math.isfinite(v) for v in vals)
    if not ok:
        raise _fail(f"{where}{key} must be {n} finite numbers, got {vals!r}"[:400])
    return tuple(vals)


def _extra(obj: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """The keys of a section this runtime does not read, kept to be written back."""
    return {k: v for k, v in obj.items() if k not in known}


def _readonly(values: tuple[float, ...] | None) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    arr.flags.writeable = False
    return arr


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class ObservationSpec:
    """``observation``: what the policy node builds from /joint_states, in graph order."""

    names: tuple[str, ...]
    """Observation entries (``<joint>.position`` / ``<joint>.velocity`` for the arm)."""
    units: tuple[str, ...]
    """Unit of each entry (``rad``, ``rad/s``; :data:`UNSPECIFIED` where the env has none)."""
    low: tuple[float, ...] | None
    """Expected range of each entry (joint limits), or None when not declared; informative
    (the runtime flags, it does not clip, observations outside it)."""
    high: tuple[float, ...] | None
    """Upper end of that range, or None."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this runtime does not read (written back unchanged)."""

    KEYS = ("names", "units", "low", "high")

    @classmethod
    def from_json(cls, raw: Any) -> ObservationSpec:
        w = "observation."
        obs = _object(raw, "observation")
        names = _names(obs, "names", w)
        units = _strings(obs, "units", w, len(names), "names")
        low = high = None
        if obs.get("low") is not None or obs.get("high") is not None:
            low = _numbers(obs, "low", w, len(names))
            high = _numbers(obs, "high", w, len(names))
            below = [i for i, (lo, hi) in enumerate(zip(low, high)) if hi < lo]
            if below:
                i = below[0]
                raise _fail(f"observation.high[{names[i]}] = {high[i]:g} is below "
                            f"observation.low {low[i]:g}")
        return cls(names, units, low, high, _extra(obs, cls.KEYS))

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "units": list(self.units),
                "low": None if self.low is None else list(self.low),
                "high": None if self.high is None else list(self.high), **self.extra}


@dataclass(frozen=True)
class ActionSpec:
    """``action``: the command the actor gives, in graph order."""

    names: tuple[str, ...]
    """Command entries (``<joint>.effort`` for the robot arm)."""
    joints: tuple[str, ...] | None
    """The joint each entry drives; None when the file does not say (written before the
    field existed: :attr:`joint_names` derives them from the names)."""
    units: tuple[str, ...]
    """Unit of each entry (``N*m`` for effort commands)."""
    low: tuple[float, ...]
    """Lower command limit, physical units."""
    high: tuple[float, ...]
    """Upper command limit, physical units (above ``low`` everywhere)."""
    interface: str | None
    """What a command means on the robot (``effort``, ``position_delta``, or
    :data:`UNSPECIFIED`); None when the file does not say (read as unspecified)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this runtime does not read (written back unchanged)."""

    KEYS = ("names", "joints", "units", "low", "high", "interface")

    @property
    def joint_names(self) -> tuple[str, ...]:
        """``joints``, or each name up to its last ``.`` (``shoulder.effort`` -> ``shoulder``)."""
        if self.joints is not None:
            return self.joints
        return tuple(n.rpartition(".")[0] or n for n in self.names)

    @classmethod
    def from_json(cls, raw: Any) -> ActionSpec:
        w = "action."
        act = _object(raw, "action")
        names = _names(act, "names", w)
        units = _strings(act, "units", w, len(names), "names")
        joints = act.get("joints")
        if joints is not None and (not isinstance(joints, list) or len(joints) != len(names)
                                   or not all(isinstance(j, str) and j for j in joints)):
            raise _fail(f"action.joints must name one joint per command entry, got {joints!r}")
        low = _numbers(act, "low", w, len(names))
        high = _numbers(act, "high", w, len(names))
        if not all(hi > lo for lo, hi in zip(low, high)):
            raise _fail(f"action.high must exceed action.low (low={list(low)}, "
                        f"high={list(high)})")
        interface = _optional(act, "interface", w, str)
        return cls(names, None if joints is None else tuple(joints), units, low, high,
                   interface, _extra(act, cls.KEYS))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"names": list(self.names)}
        if self.joints is not None:
            out["joints"] = list(self.joints)
        out.update(units=list(self.units), low=list(self.low), high=list(self.high))
        if self.interface is not None:
            out["interface"] = self.interface
        return {**out, **self.extra}


@dataclass(frozen=True)
class ContextField:
    """One field of an encoder input row."""

    name: str
    """``obs``, ``action``, ``reward`` or ``next_obs``."""
    size: int
    """Number of entries of the row this field takes."""
    units: str | None = "physical"
    """``physical`` (what the robot speaks; the graph normalizes); None when the file does
    not say (read as physical)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "size": self.size}
        if self.units is not None:
            out["units"] = self.units
        return out


@dataclass(frozen=True)
class ContextSpec:
    """``context``: the encoder's input row layout and what its reward is."""

    fields: tuple[ContextField, ...]
    """Row fields in order (``obs``, ``action`` and ``reward`` once each, ``next_obs``
    optional)."""
    reward_key: str | None
    """When set, the context reward is ``info[key]`` rather than the task reward."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this runtime does not read (written back unchanged)."""

    KEYS = ("fields", "reward_key")

    @classmethod
    def from_json(cls, raw: Any, obs_dim: int, action_dim: int) -> ContextSpec:
        ctx = _object(raw, "context")
        fields_raw = _need(ctx, "fields", "context.", list)
        expected = {"obs": obs_dim, "next_obs": obs_dim, "action": action_dim, "reward": 1}
        fields: list[ContextField] = []
        for i, f in enumerate(fields_raw):
            w = f"context.fields[{i}]."
            name = _need(f, "name", w, str)
            size = _need(f, "size", w, int)
            if name not in CONTEXT_FIELD_NAMES:
                raise _fail(f"{w}name {name!r} is not one of {CONTEXT_FIELD_NAMES}")
            if size != expected[name]:
                raise _fail(f"context field {name!r} has size {size}, expected "
                            f"{expected[name]}")
            fields.append(ContextField(name, size, _optional(f, "units", w, str)))
        order = [f.name for f in fields]
        if len(set(order)) != len(order) or not {"obs", "action", "reward"} <= set(order):
            raise _fail(f"context.fields must list obs, action and reward once each (next_obs "
                        f"optional), got {order}")
        key = ctx.get("reward_key")
        if key is not None and not isinstance(key, str):
            raise _fail(f"context.reward_key must be a string or null, got {key!r}")
        return cls(tuple(fields), key, _extra(ctx, cls.KEYS))

    def to_json(self) -> dict[str, Any]:
        return {"fields": [f.to_json() for f in self.fields], "reward_key": self.reward_key,
                **self.extra}


@dataclass(frozen=True)
class InferenceSpec:
    """``inference``: how the encoder graph turns transitions into the belief."""

    mode: str
    """:data:`INFERENCE_MODES`: ``pog``: one Gaussian factor per transition, multiplied into
    running sums by the runtime; ``pooled``: one step of a fixed-size belief state
    (``STEP_INPUTS`` -> ``STEP_OUTPUTS``); ``particles``: one step of the particles'
    log-weights (``PARTICLE_STEP_INPUTS`` -> ``PARTICLE_STEP_OUTPUTS``), z a particle drawn
    from the normalized weights."""
    policy_input: str
    """:data:`POLICY_INPUTS`: the actor's ``z`` is a ``sample`` (latent wide) or the
    ``belief``'s mean and standard deviation (2 x latent wide); ``particles``: always
    ``sample`` (a particle)."""
    window: int | None = None
    """``pooled``: transitions the step state holds (the ring's length); None otherwise."""
    features: int | None = None
    """``pooled``: features per transition in the step state; None otherwise."""
    num_particles: int | None = None
    """``particles``: hypotheses of z (P, the step graph's log-weight width); None otherwise."""
    reward_std: float | None = None
    """``particles``: standard deviation of the context reward around the decoder's
    prediction, the likelihood's noise the step graph was exported with (informative: it is
    inside the graph); None otherwise."""
    particles: tuple[tuple[float, ...], ...] | None = None
    """``particles``: the P hypotheses of z, [P][latent_dim] finite numbers as written (the
    runtime's z is one of them; the step graph holds the same values as a constant); None
    otherwise."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this runtime does not read (written back unchanged)."""

    KEYS = ("mode", "policy_input", "window", "features")
    PARTICLE_KEYS = ("mode", "policy_input", "num_particles", "reward_std", "particles")

    @classmethod
    def from_json(cls, raw: Any, latent_dim: int | None = None) -> InferenceSpec:
        """Parse ``inference``; ``latent_dim`` (the contract's) checks the particles' width."""
        w = "inference."
        inf = _object(raw, "inference")
        mode = _need(inf, "mode", w, str)
        if mode not in INFERENCE_MODES:
            raise _fail(f"inference.mode {mode!r} is not one of {INFERENCE_MODES} (a newer "
                        f"exporter? update pearl_robot on the robot)")
        policy_input = _need(inf, "policy_input", w, str)
        if policy_input not in POLICY_INPUTS:
            raise _fail(f"inference.policy_input {policy_input!r} must be 'sample' or "
                        f"'belief'")
        if mode == "particles":
            return cls._particles_from_json(inf, policy_input, latent_dim)
        window = features = None
        if mode == "pooled":
            window = _need(inf, "window", w, int)
            features = _need(inf, "features", w, int)
            if window <= 0 or features <= 0:
                raise _fail("inference.window and inference.features must be > 0")
        return cls(mode, policy_input, window, features,
                   extra=_extra(inf, cls.KEYS if mode == "pooled" else cls.KEYS[:2]))

    @classmethod
    def _particles_from_json(cls, inf: dict[str, Any], policy_input: str,
                             latent_dim: int | None) -> InferenceSpec:
        w = "inference."
        if policy_input != "sample":
            raise _fail(f"inference.policy_input must be 'sample' for mode 'particles' (z is "
                        f"one particle), got {policy_input!r}")
        n = _need(inf, "num_particles", w, int)
        if n <= 0:
            raise _fail(f"inference.num_particles must be > 0, got {n}")
        std = _need(inf, "reward_std", w, float)
        if not (math.isfinite(std) and std > 0):
            raise _fail(f"inference.reward_std must be a finite number > 0, got {std!r}")
        rows = _need(inf, "particles", w, list)
        if len(rows) != n:
            raise _fail(f"inference.particles has {len(rows)} rows, inference.num_particles "
                        f"says {n}")
        width = latent_dim if latent_dim is not None else \
            (len(rows[0]) if rows and isinstance(rows[0], list) else 0)
        for i, row in enumerate(rows):
            ok = isinstance(row, list) and len(row) == width and width > 0 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in row)
            if not ok:
                raise _fail(f"inference.particles[{i}] must be {width} finite numbers "
                            f"(latent_dim), got {row!r}"[:300])
        return cls("particles", policy_input, num_particles=n, reward_std=std,
                   particles=tuple(tuple(r) for r in rows),
                   extra=_extra(inf, cls.PARTICLE_KEYS))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "policy_input": self.policy_input}
        if self.window is not None:
            out.update(window=self.window, features=self.features)
        if self.num_particles is not None:
            out.update(num_particles=self.num_particles, reward_std=self.reward_std,
                       particles=[list(r) for r in self.particles or ()])
        return {**out, **self.extra}


@dataclass(frozen=True)
class PosteriorSpec:
    """``posterior``: the belief convention the encoder was trained with."""

    convention: str
    """One of :data:`POSTERIOR_CONVENTIONS`."""
    information_bottleneck: bool
    """False: the encoder gives point estimates, z is the (weighted) mean over the context."""
    var_floor: float
    """Lower clamp the encoder applies to each factor's variance."""
    recommended_window: int
    """Context size (transitions) matching training and the evaluation protocol."""
    train_context_size: int | None = None
    """Transitions per task context in training (informative); None: not recorded."""
    eval_context_steps: int | None = None
    """Steps of context the evaluation protocol collects (informative); None: not recorded."""
    log_std_range: tuple[float, float] | None = None
    """The actor's log-std clamp (informative); None: not recorded."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this runtime does not read (written back unchanged)."""

    KEYS = ("convention", "information_bottleneck", "var_floor", "train_context_size",
            "eval_context_steps", "recommended_window", "log_std_range")

    @classmethod
    def from_json(cls, raw: Any) -> PosteriorSpec:
        w = "posterior."
        post = _object(raw, "posterior")
        conv = _need(post, "convention", w, str)
        if conv not in POSTERIOR_CONVENTIONS:
            raise _fail(f"posterior.convention {conv!r} is not one of {POSTERIOR_CONVENTIONS}")
        ib = _need(post, "information_bottleneck", w, bool)
        var_floor = _need(post, "var_floor", w, float)
        window = _need(post, "recommended_window", w, int)
        if window <= 0:
            raise _fail("posterior.recommended_window must be > 0")
        if not var_floor >= 0:
            raise _fail(f"posterior.var_floor must be a finite number >= 0, got {var_floor!r}")
        log_std = None
        if "log_std_range" in post:
            log_std = _numbers(post, "log_std_range", w, 2)
        return cls(conv, ib, var_floor, window, _optional(post, "train_context_size", w, int),
                   _optional(post, "eval_context_steps", w, int),
                   log_std,  # type: ignore[arg-type]
                   _extra(post, cls.KEYS))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"convention": self.convention,
                               "information_bottleneck": self.information_bottleneck,
                               "var_floor": self.var_floor}
        if self.train_context_size is not None:
            out["train_context_size"] = self.train_context_size
        if self.eval_context_steps is not None:
            out["eval_context_steps"] = self.eval_context_steps
        out["recommended_window"] = self.recommended_window
        if self.log_std_range is not None:
            out["log_std_range"] = list(self.log_std_range)
        return {**out, **self.extra}


Shape = tuple[int | str, ...]
"""A declared tensor shape: ``"batch"`` (or 1) then the fixed trailing sizes."""


@dataclass(frozen=True)
class GraphSpec:
    """``graphs.actor`` / ``graphs.encoder``: one ONNX file and its tensors, as declared."""

    file: str
    """The file in the bundle directory (:data:`ACTOR_FILE` / :data:`ENCODER_FILE`)."""
    opset: int | None
    """ONNX opset it was exported with (informative); None: not recorded."""
    inputs: tuple[tuple[str, Shape], ...]
    """Input tensors in feed order, each with its declared shape."""
    outputs: tuple[tuple[str, Shape], ...]
    """Output tensors in order, each with its declared shape."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this runtime does not read (written back unchanged)."""

    KEYS = ("file", "opset", "inputs", "outputs")

    @classmethod
    def declared(cls, file: str, opset: int | None,
                 tensors: Mapping[str, Mapping[str, int | tuple[int, ...]]]) -> GraphSpec:
        """The spec :func:`declared_graph_io` implies (dynamic batch): what the exporter
        writes, so the table of tensors has one owner."""

        def shapes(kind: str) -> tuple[tuple[str, Shape], ...]:
            return tuple((name, ("batch", *(w if isinstance(w, tuple) else (w,))))
                         for name, w in tensors[kind].items())

        return cls(file, opset, shapes("inputs"), shapes("outputs"))

    @classmethod
    def from_json(cls, graphs: dict[str, Any], name: str,
                  expected: tuple[str, Mapping[str, Any]], sizes: str) -> GraphSpec:
        """Parse ``graphs.<name>`` and require exactly the I/O the contract's sizes imply
        (``expected`` from :func:`declared_graph_io`; ``sizes`` names them for the error): a
        contract that lies about its graphs (another file, another tensor, another width) is
        refused here, before any graph is loaded, even when the graphs would fit."""
        fname, io_ = expected
        g = _need(graphs, name, "graphs.", dict)
        if g.get("file") != fname:
            raise _fail(f"graphs.{name}.file is {g.get('file')!r}; this runtime reads "
                        f"{fname!r}")
        opset = _optional(g, "opset", f"graphs.{name}.", int)
        parsed: dict[str, tuple[tuple[str, Shape], ...]] = {}
        for kind, tensors in io_.items():
            declared = _need(g, kind, f"graphs.{name}.", dict)
            if list(declared) != list(tensors):
                raise _fail(f"graphs.{name}.{kind} names {list(declared)}, the runtime feeds "
                            f"{list(tensors)}")
            for tname, width in tensors.items():
                shape = declared[tname]
                tail = list(width) if isinstance(width, tuple) else [width]
                if not (isinstance(shape, list) and len(shape) == 1 + len(tail) and
                        shape[0] in ("batch", 1) and not isinstance(shape[0], bool) and
                        shape[1:] == tail and
                        not any(isinstance(x, bool) for x in shape[1:])):
                    want = ", ".join(map(str, ["'batch'", *tail]))
                    raise _fail(f"graphs.{name}.{kind}.{tname} declares shape {shape!r}, but "
                                f"the contract's sizes make it [{want}] ({sizes})")
            parsed[kind] = tuple((t, tuple(declared[t])) for t in tensors)
        return cls(fname, opset, parsed["inputs"], parsed["outputs"], _extra(g, cls.KEYS))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file}
        if self.opset is not None:
            out["opset"] = self.opset
        out["inputs"] = {n: list(s) for n, s in self.inputs}
        out["outputs"] = {n: list(s) for n, s in self.outputs}
        return {**out, **self.extra}


@dataclass(frozen=True)
class GoldenSpec:
    """``golden``: the recorded vectors the loader replays, and how close they must come."""

    atol: float
    """Absolute tolerance of the load-time golden check."""
    rtol: float
    """Relative tolerance of the load-time golden check."""
    rows: int | None
    """Rows every golden array has; None: not recorded (not cross-checked)."""
    file: str | None = GOLDEN_FILE
    """Always :data:`GOLDEN_FILE` when present; None: not recorded."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this runtime does not read (written back unchanged)."""

    KEYS = ("file", "rows", "atol", "rtol")

    @classmethod
    def from_json(cls, raw: Any) -> GoldenSpec:
        w = "golden."
        golden = _object(raw, "golden")
        atol = _need(golden, "atol", w, float)
        rtol = _need(golden, "rtol", w, float)
        for where, value in (("golden.atol", atol), ("golden.rtol", rtol)):
            if not value >= 0:
                raise _fail(f"{where} must be a finite number >= 0, got {value!r}")
        file = golden.get("file")
        if "file" in golden and file != GOLDEN_FILE:
            raise _fail(f"golden.file is {file!r}; this runtime reads {GOLDEN_FILE!r}")
        rows = golden.get("rows")
        if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool)
                                 or rows <= 0):
            raise _fail(f"golden.rows must be a positive integer, got {rows!r}")
        return cls(atol, rtol, rows, file, _extra(golden, cls.KEYS))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.file is not None:
            out["file"] = self.file
        if self.rows is not None:
            out["rows"] = self.rows
        return {**out, "atol": self.atol, "rtol": self.rtol, **self.extra}


# --------------------------------------------------------------------------- graph I/O table

GraphIO = dict[str, tuple[str, dict[str, dict[str, int | tuple[int, ...]]]]]


def declared_graph_io(obs_dim: int, action_dim: int, latent_dim: int, context_dim: int,
                      z_dim: int | None = None, step_state: tuple[int, int] | None = None,
                      particles: int | None = None) -> GraphIO:
    """Graph name -> (file, {"inputs"|"outputs": {tensor: trailing shape}}): what the
    observation, action, latent and context sizes imply; the one table the exporter writes
    the contract's ``graphs`` from and both that section and the loaded ONNX graphs are
    compared with. ``z_dim``: the actor's latent input when it is not ``latent_dim`` (a
    belief-input policy: 2 x latent); ``step_state``: (window, features) of a step-state
    encoder (inference ``pooled``); ``particles``: P of a particle step encoder (inference
    ``particles``)."""
    z = latent_dim if z_dim is None else z_dim
    if particles is not None:
        enc: dict[str, dict[str, int | tuple[int, ...]]] = {
            "inputs": {"transition": context_dim, "log_w": particles},
            "outputs": {"log_w_out": particles, "loglik": particles}}
    elif step_state is not None:
        enc = {
            "inputs": {"transition": context_dim, "ring": step_state, "count": 1},
            "outputs": {"ring_out": step_state, "count_out": 1, "mu": latent_dim,
                        "var": latent_dim}}
    else:
        enc = {"inputs": {"transition": context_dim},
               "outputs": {"mu": latent_dim, "var": latent_dim}}
    return {
        "actor": (ACTOR_FILE, {"inputs": {"obs": obs_dim, "z": z, "eps": action_dim},
                               "outputs": {"action_mean": action_dim,
                                           "action_sample": action_dim}}),
        "encoder": (ENCODER_FILE, enc),
    }


# --------------------------------------------------------------------------- the contract

@dataclass(frozen=True)
class Contract:
    """The whole ``contract.json``, typed; :meth:`to_json` and :meth:`from_json` are inverse.

    Built by the exporter (``files`` empty and ``contract_sha256`` "" until sealed) and parsed
    by the loader. Every quantity has one name from the MJCF to the node: the control period
    is ``control_period`` in the robot description, the environment, the checkpoint, this
    contract, the runtime and the policy node's timer."""

    schema: str
    """:data:`BUNDLE_SCHEMA` (another schema is refused at parse)."""
    observation: ObservationSpec
    """Observation names, units and ranges."""
    action: ActionSpec
    """Command names, joints, units, limits and interface."""
    control_period: float
    """Seconds between control ticks the policy was trained at (the robot description's
    ``pearl/control_period``); the policy node's timer period."""
    latent_dim: int
    """Size of z."""
    context: ContextSpec
    """Encoder input row layout and context reward."""
    inference: InferenceSpec | None
    """Inference mode and policy input; None when the file predates the choice (read as
    ``pog`` with a ``sample`` policy input)."""
    posterior: PosteriorSpec
    """Belief convention and window."""
    actor_graph: GraphSpec
    """``graphs.actor``."""
    encoder_graph: GraphSpec
    """``graphs.encoder``."""
    golden: GoldenSpec
    """Golden vectors' tolerances and size."""
    task_family: Mapping[str, Any]
    """The family's ``describe()`` (name, tasks, horizon, ...), JSON as written."""
    robot: Mapping[str, Any] | None
    """The robot description (``RobotSpec.to_dict()``) the policy was trained for, or None
    for families that drive no described robot."""
    provenance: Mapping[str, Any]
    """Checkpoint path and hash, training counters, config, versions, parity errors."""
    files: Mapping[str, str]
    """File name -> sha256 of every :data:`HASHED_FILES` entry and of the
    :data:`OPTIONAL_FILES` the bundle has (empty until sealed); the loader checks all of
    them."""
    contract_sha256: str = ""
    """Content hash of the rest of the contract; the bundle's identity (``Bundle.sha256``).
    Empty until sealed."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Top-level keys this runtime does not read (written back unchanged)."""

    KEYS = ("schema", "observation", "action", "control_period", "latent_dim", "context",
            "inference", "posterior", "graphs", "golden", "task_family", "robot", "provenance",
            "files", "contract_sha256")

    # -- JSON ---------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, raw: Any) -> Contract:
        """Validate a contract JSON object (BundleContractError naming the first bad field).
        Sections are read in file order, so the first problem reported is the first one a
        reader of the file would meet."""
        raw = _object(raw, "")
        schema = _need(raw, "schema", "", str)
        if schema != BUNDLE_SCHEMA:
            raise _fail(f"schema {schema!r} is not supported by this runtime (expects "
                        f"{BUNDLE_SCHEMA!r}); {REEXPORT_HINT}")
        obs = ObservationSpec.from_json(_need(raw, "observation", "", dict))
        act = ActionSpec.from_json(_need(raw, "action", "", dict))
        period = _need(raw, "control_period", "", float)
        if not period > 0:
            raise _fail(f"control_period must be > 0, got {period}")
        latent = _need(raw, "latent_dim", "", int)
        if latent <= 0:
            raise _fail(f"latent_dim must be > 0, got {latent}")
        ctx = ContextSpec.from_json(_need(raw, "context", "", dict), len(obs.names),
                                    len(act.names))
        post = PosteriorSpec.from_json(_need(raw, "posterior", "", dict))
        inf = InferenceSpec.from_json(raw["inference"], latent) \
            if raw.get("inference") is not None else None
        golden = GoldenSpec.from_json(_need(raw, "golden", "", dict))
        actor_graph, encoder_graph = cls._graphs_from_json(raw, obs, act, latent, ctx, inf)
        files = _need(raw, "files", "", dict)
        missing = [n for n in HASHED_FILES if n not in files]
        if missing:
            raise _fail(f"files lacks the sha256 of {missing}")
        if not all(isinstance(v, str) for v in files.values()):
            raise _fail(f"files must map names to sha256 strings, got {files!r}"[:300])
        odd = [n for n in files if not _plain_file_name(n)]
        if odd:
            raise _fail(f"files lists {odd[0]!r}, not a plain file name in the bundle "
                        f"directory (a path, a hidden name or the contract itself)"[:300])
        family = raw.get("task_family")
        robot = raw.get("robot")
        prov = raw.get("provenance")
        for key, value in (("task_family", family), ("provenance", prov), ("robot", robot)):
            if value is not None and not isinstance(value, dict):
                raise _fail(f"{key} must be an object, got {value!r}"[:300])
        sha = _optional(raw, "contract_sha256", "", str)
        return cls(schema=schema, observation=obs, action=act, control_period=period,
                   latent_dim=latent, context=ctx, inference=inf, posterior=post,
                   actor_graph=actor_graph, encoder_graph=encoder_graph, golden=golden,
                   task_family=family or {}, robot=robot, provenance=prov or {},
                   files=files, contract_sha256=sha or "", extra=_extra(raw, cls.KEYS))

    @staticmethod
    def _graphs_from_json(raw: dict[str, Any], obs: ObservationSpec, act: ActionSpec,
                          latent: int, ctx: ContextSpec, inf: InferenceSpec | None
                          ) -> tuple[GraphSpec, GraphSpec]:
        """``graphs``, checked against what the sizes and the inference mode imply."""
        graphs = _need(raw, "graphs", "", dict)
        o, a, c = len(obs.names), len(act.names), sum(f.size for f in ctx.fields)
        belief = inf is not None and inf.policy_input == "belief"
        pooled = inf is not None and inf.mode == "pooled"
        io_ = declared_graph_io(o, a, latent, c, 2 * latent if belief else latent,
                                (inf.window, inf.features) if pooled else None,  # type: ignore
                                inf.num_particles if inf is not None else None)
        sizes = f"obs {o}, action {a}, latent {latent}, context {c}"
        return (GraphSpec.from_json(graphs, "actor", io_["actor"], sizes),
                GraphSpec.from_json(graphs, "encoder", io_["encoder"], sizes))

    def to_json(self) -> dict[str, Any]:
        """The JSON object, in the exporter's key order; ``contract_sha256`` only once sealed."""
        out: dict[str, Any] = {
            "schema": self.schema, "observation": self.observation.to_json(),
            "action": self.action.to_json(), "control_period": self.control_period,
            "latent_dim": self.latent_dim, "context": self.context.to_json()}
        if self.inference is not None:
            out["inference"] = self.inference.to_json()
        out.update({
            "posterior": self.posterior.to_json(),
            "graphs": {"actor": self.actor_graph.to_json(),
                       "encoder": self.encoder_graph.to_json()},
            "golden": self.golden.to_json(), "task_family": dict(self.task_family),
            "robot": None if self.robot is None else dict(self.robot),
            "provenance": dict(self.provenance), "files": dict(self.files)})
        if self.contract_sha256:
            out["contract_sha256"] = self.contract_sha256
        return {**out, **self.extra}

    @property
    def raw(self) -> dict[str, Any]:
        """The JSON object (equal to the file's content: the round trip is exact)."""
        return self.to_json()

    # -- the flat view the control loop reads -------------------------------------------------
    @property
    def obs_names(self) -> tuple[str, ...]:
        """Observation entries in graph order (what the policy node builds from
        /joint_states)."""
        return self.observation.names

    @property
    def obs_units(self) -> tuple[str, ...]:
        return self.observation.units

    @cached_property
    def obs_low(self) -> np.ndarray | None:
        """``observation.low`` as read-only float64, or None when no range is declared."""
        return _readonly(self.observation.low)

    @cached_property
    def obs_high(self) -> np.ndarray | None:
        return _readonly(self.observation.high)

    @property
    def action_names(self) -> tuple[str, ...]:
        return self.action.names

    @property
    def action_joints(self) -> tuple[str, ...]:
        """The joint each command entry drives (:attr:`ActionSpec.joint_names`)."""
        return self.action.joint_names

    @property
    def action_units(self) -> tuple[str, ...]:
        return self.action.units

    @cached_property
    def action_low(self) -> np.ndarray:
        """Lower command limit, physical units, read-only float64 [action_dim]."""
        return _readonly(self.action.low)  # type: ignore[return-value]

    @cached_property
    def action_high(self) -> np.ndarray:
        """Upper command limit, physical units, read-only float64 [action_dim]."""
        return _readonly(self.action.high)  # type: ignore[return-value]

    @property
    def command_interface(self) -> str:
        """``action.interface``, :data:`UNSPECIFIED` when the file does not say."""
        return self.action.interface if self.action.interface is not None else UNSPECIFIED

    @property
    def context_fields(self) -> tuple[ContextField, ...]:
        return self.context.fields

    @property
    def context_reward_key(self) -> str | None:
        return self.context.reward_key

    @property
    def posterior_convention(self) -> str:
        return self.posterior.convention

    @property
    def information_bottleneck(self) -> bool:
        return self.posterior.information_bottleneck

    @property
    def var_floor(self) -> float:
        return self.posterior.var_floor

    @property
    def recommended_window(self) -> int:
        return self.posterior.recommended_window

    @property
    def golden_atol(self) -> float:
        return self.golden.atol

    @property
    def golden_rtol(self) -> float:
        return self.golden.rtol

    @property
    def inference_mode(self) -> str:
        """``inference.mode``; ``pog`` for a contract written before there was a choice."""
        return self.inference.mode if self.inference is not None else "pog"

    @property
    def policy_input(self) -> str:
        """``inference.policy_input``; ``sample`` for a contract written before the choice."""
        return self.inference.policy_input if self.inference is not None else "sample"

    @property
    def step_window(self) -> int:
        """``pooled``: transitions the step state holds; 0 otherwise."""
        return (self.inference.window or 0) if self.inference is not None else 0

    @property
    def step_features(self) -> int:
        """``pooled``: features per transition in the step state; 0 otherwise."""
        return (self.inference.features or 0) if self.inference is not None else 0

    @property
    def num_particles(self) -> int:
        """``particles``: hypotheses of z in the belief; 0 otherwise."""
        return (self.inference.num_particles or 0) if self.inference is not None else 0

    @property
    def particle_reward_std(self) -> float | None:
        """``particles``: the likelihood's reward noise (informative); None otherwise."""
        return self.inference.reward_std if self.inference is not None else None

    @cached_property
    def particles(self) -> np.ndarray | None:
        """``particles``: the hypotheses of z, read-only float64 [P, latent]; None otherwise."""
        if self.inference is None or self.inference.particles is None:
            return None
        arr = np.asarray(self.inference.particles, dtype=np.float64)
        arr.flags.writeable = False
        return arr

    @property
    def obs_dim(self) -> int:
        return len(self.obs_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def context_dim(self) -> int:
        return sum(f.size for f in self.context_fields)

    @property
    def includes_prior(self) -> bool:
        return self.posterior_convention == "pog-with-prior"

    @property
    def policy_latent_dim(self) -> int:
        """Width of the actor's ``z`` input."""
        return 2 * self.latent_dim if self.policy_input == "belief" else self.latent_dim


def parse_contract(raw: Any) -> Contract:
    """:meth:`Contract.from_json` (the name the loader and ``bundle info`` call)."""
    return Contract.from_json(raw)


def contract_graph_io(contract: Contract) -> GraphIO:
    """:func:`declared_graph_io` for a parsed contract (its inference mode included)."""
    state = (contract.step_window, contract.step_features) \
        if contract.inference_mode == "pooled" else None
    return declared_graph_io(contract.obs_dim, contract.action_dim, contract.latent_dim,
                             contract.context_dim, contract.policy_latent_dim, state,
                             contract.num_particles or None)
