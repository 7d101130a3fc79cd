"""A trained agent on its family's held-out tasks: what the checkpoint diagnoses start from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple


class HeldOut(NamedTuple):
    """The agent of a checkpoint and one env per held-out task, each set to its task."""

    agent: Any
    """pearl_robot.core.pearl.PearlAgent, single-threaded, noise seeded with 0."""
    family: Any
    """The checkpoint's task family."""
    indices: list[int]
    """The held-out task indices (``family.eval_indices``)."""
    envs: list[Any]
    """``envs[i]`` runs task ``indices[i]``."""


def load_held_out(checkpoint: Path) -> HeldOut:
    import torch

    from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
    from pearl_robot.core.pearl import PearlAgent
    from pearl_robot.tasks.registry import make_family

    torch.set_num_threads(1)
    ck = load_checkpoint(checkpoint)
    agent = PearlAgent(networks_from_checkpoint(ck), "cpu", torch.Generator().manual_seed(0))
    fam = make_family(ck.config.train.task_family)
    idx = list(fam.eval_indices)
    envs = [fam.make_env(seed=i) for i in range(len(idx))]
    for e, t in zip(envs, idx):
        e.set_task(fam.tasks[t])
    return HeldOut(agent, fam, idx, envs)
