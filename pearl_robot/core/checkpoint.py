"""Checkpoints: everything needed to resume a run exactly, loadable with ``weights_only=True``.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values:

- ``format``: :data:`CHECKPOINT_FORMAT` (refused if different)
- ``config``: the ExperimentConfig as a plain dict
- ``env_spec``: obs/action sizes and action bounds (what this module reads back), plus the
  environment's interface record the exporter reads (``tasks.interface.EnvInterface``: names,
  units, control period, robot description)
- ``family``: the task family's ``describe()``
- ``networks``: ``PearlNetworks.state_dict()``
- ``optimizers``: name -> optimizer state dict
- ``trainer``: counters and RNG states (numpy bit generator state, torch generator states)
- ``replay``: optional buffer arrays as tensors
- ``provenance``: versions, git revision, wall clock

Writes are atomic (temp file, fsync, rename), so a crash never leaves a half checkpoint under
the final name.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pearl_robot.core.config import ExperimentConfig, from_dict
from pearl_robot.core.networks import EnvSpec, PearlNetworks
from pearl_robot.errors import PearlRobotError

CHECKPOINT_FORMAT = "pearl_robot.checkpoint/1"


class CheckpointError(PearlRobotError):
    """A checkpoint file is missing, unreadable, corrupt, or of another format."""


class Checkpoint(NamedTuple):
    """A loaded checkpoint, with its config parsed back into dataclasses."""

    config: ExperimentConfig
    env_spec: EnvSpec
    env_meta: dict[str, Any]
    family: dict[str, Any]
    networks: dict[str, torch.Tensor]
    optimizers: dict[str, Any]
    trainer: dict[str, Any]
    replay: dict[str, Any] | None
    provenance: dict[str, Any]
    path: Path


def env_spec_to_dict(spec: EnvSpec) -> dict[str, Any]:
    """The part of ``env_spec`` this module reads back (sizes and action bounds). A trainer's
    checkpoint stores the environment's full interface record
    (``tasks.interface.EnvInterface.to_json()``, a superset); a checkpoint with only this part
    loads and trains but cannot be exported (no names, no control period)."""
    return {"obs_dim": spec.obs_dim, "action_dim": spec.action_dim,
            "action_low": [float(x) for x in spec.action_low],
            "action_high": [float(x) for x in spec.action_high]}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (see module doc for the keys) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate a checkpoint (``weights_only=True``: no code runs from the file)."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / "checkpoints" / "final.pt", path / "checkpoints" / "latest.pt",
                             path / "final.pt", path / "latest.pt") if p.is_file()]
        hint = f"pass {found[0]}" if found else \
            "pass a .pt file (a run directory holds checkpoints/final.pt and latest.pt)"
        raise CheckpointError(f"{path} is a directory, not a checkpoint file; {hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                              ) from exc
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{path} is not a pearl_robot checkpoint of format "
                              f"{CHECKPOINT_FORMAT!r} (found {got!r})")
    missing = [k for k in ("config", "env_spec", "networks") if k not in raw]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    cfg = from_dict(ExperimentConfig, raw["config"], f"checkpoint {path.name}: config")
    es = raw["env_spec"]
    spec = EnvSpec(int(es["obs_dim"]), int(es["action_dim"]),
                   np.asarray(es["action_low"], dtype=np.float64),
                   np.asarray(es["action_high"], dtype=np.float64))
    return Checkpoint(cfg, spec, dict(es), raw.get("family", {}), raw["networks"],
                      raw.get("optimizers", {}), raw.get("trainer", {}), raw.get("replay"),
                      raw.get("provenance", {}), path)


def networks_from_checkpoint(ckpt: Checkpoint, device: str | torch.device = "cpu"
                             ) -> PearlNetworks:
    """Rebuild the networks and load their weights (CheckpointError on any mismatch)."""
    nets = PearlNetworks(ckpt.config.pearl, ckpt.env_spec)
    try:
        nets.load_state_dict(ckpt.networks)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {ckpt.path} weights do not fit its own config: "
                              f"{str(exc).splitlines()[0][:300]}") from exc
    return nets.to(device)
