"""Small real checkpoints and bundles for tests and demos of the robot side.

Untrained networks from ``core.pearl.build`` (seeded, so the same call gives the same
weights), saved in the trainer's checkpoint format and exported through the real exporter.
Other areas' tests (the ROS policy node, the emulator) use these to get a valid bundle in
about a second without training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from pearl_robot.core.checkpoint import save_checkpoint
from pearl_robot.core.config import ExperimentConfig, TrainConfig, reference_config
from pearl_robot.core.networks import EnvSpec
from pearl_robot.core.pearl import build
from pearl_robot.export.exporter import ExportConfig, ExportResult, export_checkpoint
from pearl_robot.tasks.interface import EnvInterface
from pearl_robot.tasks.registry import make_family

SMALL_PARTICLE_MODEL: dict[str, Any] = {
    "inference": "pooled", "policy_input": "sample", "critic_trains_encoder": False,
    "refinement": "particles", "num_particles": 48, "particle_reward_std": 0.5,
    "latent_dim": 2, "hidden_sizes": (32, 32), "encoder_hidden_sizes": (32, 32),
    "feature_dim": 16, "head_hidden_sizes": (16,), "decoder_hidden_sizes": (32, 32),
    "embedding_batch_size": 24}
"""``pearl`` overrides of a small "particles" model (sparse point-robot sizes scaled down,
48 particles; a reward std of 0.5 keeps an untrained decoder's log-weights of order one per
row) for tests of the particle belief's export and runtime."""


def write_test_checkpoint(path: str | Path, family: str = "point-robot", seed: int = 0,
                          env_meta: dict[str, Any] | None = None, output_gain: float = 1.0,
                          **pearl: Any) -> Path:
    """An untrained checkpoint for ``family`` (reference preset when one exists, with
    ``pearl`` overrides, e.g. ``hidden_sizes=(64, 64)`` or ``use_next_obs_in_context=True``).
    ``env_meta`` entries (units, command interface, ...) replace those of the env's interface
    record in the checkpoint's ``env_spec`` (``EnvInterface.to_json()``).

    ``output_gain`` multiplies the output layers of the actor's mean head and the encoder:
    the reference initialisation makes them ~1e-3, so an untrained policy barely moves and
    ignores z. A gain of a few hundred gives actions and factors of order one, which makes
    equivalence tests able to see a wrong z, normalization or context row."""
    try:
        cfg = reference_config(family)
    except Exception:  # noqa: BLE001 - families without a preset use the defaults
        cfg = ExperimentConfig(train=TrainConfig(task_family=family))
    if pearl:
        cfg = dataclasses.replace(cfg, pearl=dataclasses.replace(cfg.pearl, **pearl))
    fam = make_family(family)
    env = fam.make_env(seed=seed)
    try:
        spec = EnvSpec.from_env(env)
        meta = EnvInterface.from_env(env).to_json()
    finally:
        env.close()
    meta.update(env_meta or {})
    nets, _ = build(cfg.pearl, spec, seed=seed)
    if output_gain != 1.0:
        with torch.no_grad():
            nets.actor.mean_head.weight.mul_(output_gain)
            last = nets.encoder.phi[-1] if cfg.pearl.inference == "pooled" \
                else nets.encoder.net[-1]
            last.weight.mul_(output_gain)
    payload = {"config": dataclasses.asdict(cfg), "env_spec": meta,
               "family": fam.describe(), "networks": nets.state_dict(),
               "trainer": {"iteration": 0, "gradient_steps": 0},
               "provenance": {"note": "untrained test checkpoint", "seed": seed}}
    return save_checkpoint(path, payload)


def write_test_bundle(out_dir: str | Path, family: str = "point-robot", seed: int = 0,
                      checkpoint_path: str | Path | None = None,
                      config: ExportConfig | None = None,
                      env_meta: dict[str, Any] | None = None, output_gain: float = 1.0,
                      **pearl: Any) -> ExportResult:
    """Checkpoint (next to ``out_dir`` unless given) + parity-checked bundle in ``out_dir``."""
    out_dir = Path(out_dir)
    ckpt = Path(checkpoint_path) if checkpoint_path else \
        out_dir.parent / f"{out_dir.name}.ckpt.pt"
    write_test_checkpoint(ckpt, family, seed, env_meta=env_meta, output_gain=output_gain,
                          **pearl)
    return export_checkpoint(ckpt, out_dir, config or ExportConfig(random_rows=128,
                                                                   record_steps=60))


__all__ = ["SMALL_PARTICLE_MODEL", "write_test_bundle", "write_test_checkpoint"]
