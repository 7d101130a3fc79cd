"""Checkpoint -> model bundle, refusing to write one that does not reproduce the torch model.

Steps (``export_bundle``):

1. load the checkpoint, rebuild :class:`PearlNetworks`;
2. write ``actor.onnx`` and ``encoder.onnx`` into a temporary directory next to the target;
3. **parity**: run onnxruntime (the robot's settings) and the torch training code path
   (``PearlAgent.encode`` on normalized context rows, ``TanhGaussianActor.forward`` with a
   torch generator whose draws are replayed as ``eps``) on *recorded* inputs (the
   checkpoint's replay buffers when saved, else a short rollout of the policy in the task
   family's own environment) and on *random* inputs spread over and beyond the data range;
   any difference above the tolerance raises :class:`ExportParityError` and nothing is
   written under the target name;
4. write ``golden.npz`` (recorded rows first, then random ones, with the torch outputs) and
   ``contract.json``: a typed :class:`~pearl_robot.runtime.contract.Contract` built from the
   networks and the checkpoint's :class:`~pearl_robot.tasks.interface.EnvInterface` (a missing
   name or control period is :class:`ExportContractError`, never a default), sealed with every
   file's sha256;
5. with ``embed_checkpoint`` (``export --with-checkpoint``), ``checkpoint.pt``: a
   weights-only copy of the checkpoint (networks, config, env interface, task family, trainer
   counters; no replay buffers, optimizer or RNG states), read back and compared with the
   networks before it is listed in the contract's ``files`` and named bundle-relative in
   ``provenance.embedded_checkpoint``. It is what the morning's retrain warm-starts from
   (``train --init``) wherever the bundle goes; the robot never loads it;
6. load the temporary bundle with the robot-side loader (``runtime.load_bundle``: hashes,
   shapes, golden vectors) as a last check, then rename it into place (atomic on one file
   system; an existing bundle is replaced only with ``overwrite``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pearl_robot.core.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    networks_from_checkpoint,
    save_checkpoint,
)
from pearl_robot.core.config import to_dict
from pearl_robot.core.inference import (
    ContextLayout,
    ParticleBelief,
    ParticleStepOutput,
    recommended_window,
)
from pearl_robot.core.networks import LOG_STD_MAX, LOG_STD_MIN, PearlNetworks
from pearl_robot.core.pearl import PearlAgent
from pearl_robot.errors import PearlRobotError
from pearl_robot.export.graphs import DEFAULT_OPSET, export_actor, export_encoder
from pearl_robot.runtime.bundle import (
    ACTOR_FILE,
    ACTOR_INPUTS,
    ACTOR_OUTPUTS,
    CHECKPOINT_FILE,
    CONTRACT_FILE,
    ENCODER_FILE,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    GOLDEN_FILE,
    PARTICLE_STEP_INPUTS,
    PARTICLE_STEP_OUTPUTS,
    STEP_INPUTS,
    STEP_OUTPUTS,
    Bundle,
    BundleError,
    load_bundle,
    seal_contract,
    session_options,
    sha256_file,
)
from pearl_robot.runtime.contract import (
    BUNDLE_SCHEMA,
    ActionSpec,
    ContextField,
    ContextSpec,
    Contract,
    GoldenSpec,
    GraphSpec,
    InferenceSpec,
    ObservationSpec,
    PosteriorSpec,
    declared_graph_io,
)
from pearl_robot.tasks.interface import EnvInterface, EnvInterfaceError

log = logging.getLogger(__name__)


class ExportError(PearlRobotError):
    """The bundle could not be written (bad target, unreadable checkpoint, failed self-check)."""


class ExportParityError(ExportError):
    """The ONNX graphs differ from the torch model beyond the tolerance; nothing was written."""


class ExportContractError(ExportError):
    """A value the contract needs is missing from, or contradicts, the checkpoint's env
    interface (names, control period, bounds); the message names it. Raised before anything
    is written: the contract never guesses a value."""


@dataclass(frozen=True)
class ExportConfig:
    """How the exporter checks and what it records."""

    parity_atol: float = 1e-4
    """Absolute tolerance of ONNX vs torch (physical actions, factor means/variances)."""
    parity_rtol: float = 1e-4
    """Relative tolerance of ONNX vs torch."""
    golden_atol: float = 1e-4
    """Tolerance the robot applies to the golden vectors at load (absolute)."""
    golden_rtol: float = 1e-3
    """... and relative (another CPU / onnxruntime build may round differently)."""
    random_rows: int = 512
    """Random inputs checked for parity."""
    record_steps: int = 200
    """Environment steps recorded for parity when the checkpoint holds no replay data."""
    golden_rows: int = 32
    """Rows stored in golden.npz (half recorded, half random when both exist)."""
    opset: int = DEFAULT_OPSET
    """ONNX opset of the exported graphs."""
    seed: int = 0
    """Seeds the random inputs and the recording rollout."""
    overwrite: bool = False
    """Replace an existing bundle at the target path."""
    embed_checkpoint: bool = False
    """Write a weights-only copy of the checkpoint into the bundle (``checkpoint.pt``), so a
    retrain can warm-start from the model the robot runs without the trainer's disk; about
    1 MiB for the twin's networks. Off by default: a robot-only bundle stays minimal."""


class Recorded(NamedTuple):
    """Recorded transitions, physical units: obs/next_obs [N, obs_dim], actions
    [N, action_dim], context rewards [N]."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    source: str


class ParityReport(NamedTuple):
    """Largest |onnx - torch| per output, and what was compared."""

    max_abs_error: dict[str, float]
    recorded_rows: int
    random_rows: int
    recorded_source: str


class ExportResult(NamedTuple):
    """Where the bundle went and what the checks found."""

    path: Path
    bundle_sha256: str
    parity: ParityReport
    contract: dict[str, Any]


# --------------------------------------------------------------------------- recorded inputs

def _find_replay_arrays(obj: Any) -> Mapping[str, Any] | None:
    """The first mapping holding obs/actions/next_obs arrays in a checkpoint's replay entry
    (the trainer's MultiTaskReplay.state_dict, possibly nested per buffer)."""
    if isinstance(obj, Mapping):
        if all(k in obj for k in ("obs", "actions", "next_obs")):
            return obj
        for v in obj.values():
            found = _find_replay_arrays(v)
            if found is not None:
                return found
    return None


def recorded_from_replay(replay: Any, nets: PearlNetworks) -> Recorded | None:
    """Valid rows of saved replay buffers, actions converted back to physical units."""
    arrays = _find_replay_arrays(replay)
    if arrays is None:
        return None

    def np_(x: Any) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    o, a = nets.spec.obs_dim, nets.spec.action_dim
    obs, act, nxt = np_(arrays["obs"]), np_(arrays["actions"]), np_(arrays["next_obs"])
    rew = np_(arrays.get("context_rewards", arrays.get("rewards", np.zeros(obs.shape[:-1]))))
    if obs.ndim == 3 and "sizes" in arrays:  # [tasks, capacity, dim]: keep the filled rows
        sizes = np_(arrays["sizes"]).astype(int)
        keep = [np.arange(s) for s in sizes]
        obs = np.concatenate([obs[t, k] for t, k in enumerate(keep)])
        act = np.concatenate([act[t, k] for t, k in enumerate(keep)])
        nxt = np.concatenate([nxt[t, k] for t, k in enumerate(keep)])
        rew = np.concatenate([rew[t, k] for t, k in enumerate(keep)])
    obs, act, nxt = obs.reshape(-1, o), act.reshape(-1, a), nxt.reshape(-1, o)
    rew = rew.reshape(-1)
    if len(obs) == 0 or not (len(obs) == len(act) == len(nxt) == len(rew)):
        return None
    scale = nets.actor.action_scale.cpu().numpy()
    bias = nets.actor.action_bias.cpu().numpy()
    return Recorded(obs.astype(np.float64), act * scale + bias, rew.astype(np.float64),
                    nxt.astype(np.float64), "checkpoint replay buffers")


def recorded_from_datasets(roots: list[str | Path], nets: PearlNetworks,
                           max_rows: int = 2000) -> Recorded:
    """Transitions logged on the robot (``pearl_robot.datalog`` datasets), evenly subsampled to
    ``max_rows``: the inputs the bundle will really see. Logged rewards are the task rewards;
    for parity any realistic value serves, the context reward key does not matter."""
    from pearl_robot.datalog.reader import load_datasets

    loaded = load_datasets(roots)
    parts = [t for t in loaded.tasks.values() if len(t)]
    if not parts:
        raise ExportError(f"no usable transitions in {', '.join(map(str, roots))}")
    obs = np.concatenate([t.obs for t in parts])
    act = np.concatenate([t.action for t in parts])
    rew = np.concatenate([np.asarray(t.reward).reshape(-1) for t in parts])
    nxt = np.concatenate([t.next_obs for t in parts])
    o, a = nets.spec.obs_dim, nets.spec.action_dim
    if obs.shape[1] != o or act.shape[1] != a:
        raise ExportError(f"logged transitions have obs {obs.shape[1]} / action {act.shape[1]} "
                          f"entries but the model takes {o} / {a}: wrong dataset for this "
                          f"checkpoint")
    ok = np.isfinite(obs).all(1) & np.isfinite(act).all(1) & np.isfinite(rew) & \
        np.isfinite(nxt).all(1)
    idx = np.flatnonzero(ok)
    if len(idx) > max_rows:
        idx = idx[np.linspace(0, len(idx) - 1, max_rows).astype(int)]
    return Recorded(obs[idx].astype(np.float64), act[idx].astype(np.float64),
                    rew[idx].astype(np.float64), nxt[idx].astype(np.float64),
                    f"logged datasets ({len(idx)} of {int(ok.sum())} transitions from "
                    f"{len(roots)} dataset(s))")


def recorded_from_rollout(nets: PearlNetworks, family_info: Mapping[str, Any], steps: int,
                          seed: int) -> Recorded | None:
    """Roll the checkpoint's own policy out in its task family's environment (held-out tasks,
    z from the prior then the posterior) and record the transitions."""
    name = family_info.get("name")
    if not name or steps <= 0:
        return None
    try:
        from pearl_robot.tasks.registry import make_family

        family = make_family(str(name))
        env = family.make_env(seed=seed)
    except Exception as exc:  # noqa: BLE001 - recording is best effort; parity still runs
        log.warning("cannot build task family %r to record parity inputs (%s); using random "
                    "and replay inputs only", name, exc)
        return None
    gen = torch.Generator().manual_seed(seed)
    agent = PearlAgent(nets, "cpu", gen)
    tasks = family.eval_tasks or family.tasks
    key = family.context_reward_key
    rows: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]] = []
    episode = 0
    try:
        while len(rows) < steps:
            env.set_task(tasks[episode % len(tasks)])
            obs, _ = env.reset(seed=seed + episode)
            with torch.no_grad():
                if rows:
                    ctx = nets.layout.rows(*(np.array([r[i] for r in rows]) for i in range(4)))
                    post = agent.infer_posterior(agent.context_to_tensor(ctx[None]))
                else:
                    post = agent.infer_posterior(torch.zeros(1, 0, 1))
                z = agent.sample_z(post)[0]
            for _ in range(env.max_episode_steps):
                phys, norm = agent.act(obs, z)
                res = env.step(phys)
                r = float(res.info[key]) if key else float(res.reward)
                rows.append((np.asarray(obs, np.float64), np.asarray(norm, np.float64), r,
                             np.asarray(res.obs, np.float64)))
                obs = res.obs
                if res.terminated or res.truncated or len(rows) >= steps:
                    break
            episode += 1
    finally:
        env.close()
    scale = nets.actor.action_scale.cpu().numpy()
    bias = nets.actor.action_bias.cpu().numpy()
    return Recorded(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]) * scale
                    + bias, np.array([r[2] for r in rows]), np.array([r[3] for r in rows]),
                    f"rollout of the policy in {name} ({len(rows)} steps)")


def family_interface(family_info: Mapping[str, Any]) -> EnvInterface | None:
    """The interface record of the task family's environment as it is today, for a checkpoint
    written before the trainer saved its own (:meth:`EnvInterface.from_legacy`); None when the
    family cannot be built here (the legacy entries must then be complete)."""
    name = family_info.get("name")
    if not name:
        return None
    try:
        from pearl_robot.tasks.registry import make_family

        env = make_family(str(name)).make_env(seed=0)
    except Exception as exc:  # noqa: BLE001 - the legacy entries may still be complete
        log.warning("cannot build task family %r to read its env interface (%s)", name, exc)
        return None
    try:
        return EnvInterface.from_env(env)
    finally:
        env.close()


def interface_from_checkpoint(env_spec: Mapping[str, Any], family_info: Mapping[str, Any]
                              ) -> EnvInterface:
    """The checkpoint's ``env_spec`` as a typed record (ExportContractError naming what is
    missing); an older trainer's form (``dt``) through the documented migration."""
    try:
        if EnvInterface.is_legacy(env_spec):
            return EnvInterface.from_legacy(env_spec, family_interface(family_info))
        return EnvInterface.from_json(env_spec)
    except EnvInterfaceError as exc:
        raise ExportContractError(f"cannot write a bundle contract: {exc}") from exc


# --------------------------------------------------------------------------- embedded checkpoint

TRAINER_RESUME_KEYS = ("numpy_rng", "torch_rng")
"""Trainer entries a weights-only checkpoint leaves out: RNG states only serve an exact
``--resume``, which a checkpoint without replay buffers and optimizer states cannot give."""


def weights_only_payload(ckpt: Checkpoint) -> dict[str, Any]:
    """What ``checkpoint.pt`` holds (the keys of a trainer checkpoint, see core.checkpoint):
    everything ``train --init`` and ``export`` read (config, env interface, task family,
    networks) and the trainer's counters and last evaluation for the record, marked
    ``trainer.weights_only``. Left out: the replay buffers (tens of MB, and a warm start
    collects its own data), the optimizer states (``--init`` starts them fresh; twice the
    networks' size) and the RNG states."""
    trainer = {k: v for k, v in (ckpt.trainer or {}).items() if k not in TRAINER_RESUME_KEYS}
    trainer["weights_only"] = True
    return {"config": {"pearl": to_dict(ckpt.config.pearl), "train": to_dict(ckpt.config.train)},
            "env_spec": dict(ckpt.env_meta), "family": dict(ckpt.family or {}),
            "networks": {k: v.detach().cpu().clone() for k, v in ckpt.networks.items()},
            "trainer": trainer,
            "provenance": {**dict(ckpt.provenance or {}),
                           "weights_only_of": str(Path(ckpt.path).resolve()),
                           "weights_only_of_sha256": sha256_file(ckpt.path)}}


def _write_embedded_checkpoint(tmp: Path, payload: Mapping[str, Any], nets: PearlNetworks
                               ) -> None:
    """``checkpoint.pt`` in the temporary bundle, read back the way ``train --init`` reads it
    (``weights_only=True``) and compared tensor by tensor with the exported networks: a copy
    that would warm-start another model is never listed."""
    path = save_checkpoint(tmp / CHECKPOINT_FILE, dict(payload))
    try:
        back = networks_from_checkpoint(load_checkpoint(path), "cpu").state_dict()
    except CheckpointError as exc:
        raise ExportError(f"the embedded {CHECKPOINT_FILE} does not load back: {exc}"
                          ) from exc
    want = nets.state_dict()
    bad = [k for k in want if k not in back or not torch.equal(back[k], want[k].cpu())]
    if bad or set(back) != set(want):
        raise ExportError(f"the embedded {CHECKPOINT_FILE} differs from the exported "
                          f"networks ({(bad or sorted(set(back) ^ set(want)))[:3]})")


# --------------------------------------------------------------------------- parity

class _Inputs(NamedTuple):
    obs: np.ndarray  # actor obs [N, o]
    z: np.ndarray  # actor latent input [N, L] (or [N, 2L] for a belief-input policy)
    transition: np.ndarray  # encoder rows [N, ctx] physical
    ring: np.ndarray | None = None  # "pooled": belief state before each row [N, W, H]
    count: np.ndarray | None = None  # "pooled": [N, 1]
    log_w: np.ndarray | None = None  # "particles": log-weights before each row [N, P]


def _particles(nets: PearlNetworks) -> bool:
    """The bundle's belief is the particle set (inference "pooled", refinement "particles")."""
    return nets.cfg.inference == "pooled" and nets.cfg.refinement == "particles"


def _pooled(nets: PearlNetworks) -> bool:
    """The bundle's belief is the "pooled" step state."""
    return nets.cfg.inference == "pooled" and not _particles(nets)


@torch.inference_mode()
def _particle_loglik(nets: PearlNetworks, transition: np.ndarray | torch.Tensor,
                     chunk: int = 64) -> torch.Tensor:
    """``PearlAgent.particle_log_likelihood`` of each physical row alone [N, P], ``chunk``
    rows at a time (the decoder's [rows, P, hidden] pass bounds the memory)."""
    agent = PearlAgent(nets, "cpu")
    raw = _physical_to_replay(nets, torch.as_tensor(transition, dtype=torch.float32))
    return torch.cat([agent.particle_log_likelihood(raw[i:i + chunk, None])
                      for i in range(0, len(raw), chunk)])


def _normalized(log_w: np.ndarray) -> np.ndarray:
    """Log-weights minus their log-sum-exp (rows), as the runtime's belief keeps them."""
    m = log_w.max(axis=-1, keepdims=True)
    return log_w - m - np.log(np.exp(log_w - m).sum(axis=-1, keepdims=True))


def _log_w_along(nets: PearlNetworks, transition: np.ndarray, episode: int) -> dict[str, Any]:
    """The "particles" log-weights before each row when the rows are fed in order as one
    context, reset every ``episode`` rows (normalized, as the runtime feeds them)."""
    ll = _particle_loglik(nets, transition).numpy()
    rows = iter(ll)

    def step(_row: np.ndarray, feed: np.ndarray) -> ParticleStepOutput:
        row = next(rows)[None]
        return ParticleStepOutput(feed + row, row)

    # the runtime's own belief update, with the trainer's log-likelihoods as its step
    belief = ParticleBelief(step, nets.particles.detach().cpu().numpy(), max(1, len(ll)))
    out = np.empty_like(ll, dtype=np.float32)
    for i in range(len(ll)):
        if i % episode == 0:
            belief.reset()
        out[i] = belief.feed[0]
        belief.add_rows(transition[i])
    return {"log_w": out}


def _states_for(nets: PearlNetworks, transition: np.ndarray, episode: int) -> dict[str, Any]:
    """The belief state before each recorded row, for the bundle's step graph (none for
    "pog", whose encoder is stateless)."""
    if _particles(nets):
        return _log_w_along(nets, transition, episode)
    if _pooled(nets):
        return dict(zip(("ring", "count"), _states_along(nets, transition, episode)))
    return {}


def _physical_to_replay(nets: PearlNetworks, rows: torch.Tensor) -> torch.Tensor:
    """Physical context rows -> the replay layout the training code sees (action in [-1, 1])."""
    sl = nets.layout.slices["action"]
    act = torch.clamp((rows[:, sl] - nets.actor.action_bias) / nets.actor.action_scale,
                      -1.0, 1.0)
    return torch.cat([rows[:, :sl.start], act, rows[:, sl.stop:]], dim=-1)


@torch.inference_mode()
def _states_along(nets: PearlNetworks, transition: np.ndarray, episode: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The "pooled" belief state before each row when the rows are fed in order as one
    context, reset every ``episode`` rows: the states the robot's step graph really sees."""
    enc = nets.encoder
    rows = nets.normalize_rows(_physical_to_replay(
        nets, torch.as_tensor(transition, dtype=torch.float32)))
    ring = torch.zeros(1, enc.window, enc.features)
    count = torch.zeros(1, 1)
    rings, counts = [], []
    for i in range(len(rows)):
        if i % episode == 0:
            ring, count = torch.zeros_like(ring), torch.zeros_like(count)
        rings.append(ring[0].numpy().copy())
        counts.append(count[0].numpy().copy())
        ring, count, _mu, _var = enc.step(rows[i:i + 1], ring, count)
    return np.stack(rings), np.stack(counts)


def _random_states(nets: PearlNetworks, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Random "pooled" states: counts over 0..window, features only in the occupied slots."""
    enc = nets.encoder
    count = rng.integers(0, enc.window + 1, size=(n, 1)).astype(np.float32)
    ring = rng.standard_normal((n, enc.window, enc.features)).astype(np.float32)
    pos = np.arange(enc.window)[None, :]
    ring[pos < enc.window - count] = 0.0
    return ring, count


def _transition_rows(rec: Recorded, use_next: bool) -> np.ndarray:
    """Physical context rows (the encoder graph's input) in the contract's layout."""
    layout = ContextLayout(rec.obs.shape[1], rec.actions.shape[1], use_next)
    return layout.rows(rec.obs, rec.actions, rec.rewards, rec.next_obs if use_next else None,
                       dtype=np.float64)


def _random_inputs(nets: PearlNetworks, n: int, rng: np.random.Generator,
                   rec: Recorded | None) -> _Inputs:
    """Inputs over the data range and beyond: obs around the normalizer's offset at up to 3
    scales, actions over the full limits and a bit past them (the graph clips), z at up to
    2.5 prior standard deviations, rewards around the recorded ones."""
    o, a = nets.spec.obs_dim, nets.spec.action_dim
    L = PearlAgent(nets, "cpu").latent_input_dim
    off = nets.obs_norm.offset.cpu().numpy().astype(np.float64)
    sc = nets.obs_norm.scale.cpu().numpy().astype(np.float64)
    if rec is not None and len(rec.obs):
        off = rec.obs.mean(axis=0)
        sc = np.maximum(rec.obs.std(axis=0), 1e-3 * np.maximum(1.0, np.abs(off)))
    obs = off + sc * rng.uniform(-3.0, 3.0, size=(n, o))
    nxt = off + sc * rng.uniform(-3.0, 3.0, size=(n, o))
    low, high = nets.spec.action_low, nets.spec.action_high
    act = low + (high - low) * rng.uniform(-0.05, 1.05, size=(n, a))
    r_mu, r_sd = (float(rec.rewards.mean()), float(rec.rewards.std()) + 1e-3) \
        if rec is not None and len(rec.rewards) else (0.0, 1.0)
    rew = r_mu + r_sd * rng.uniform(-3.0, 3.0, size=n)
    z = rng.uniform(-2.5, 2.5, size=(n, L))
    trans = _transition_rows(Recorded(obs, act, rew, nxt, "random"),
                             nets.cfg.use_next_obs_in_context)
    if _pooled(nets):
        return _Inputs(obs, z, trans, *_random_states(nets, n, rng))
    if _particles(nets):  # spread log-weights (every 4th uniform: the prior), normalized
        P = int(nets.particles.shape[0])
        log_w = _normalized(rng.normal(0.0, 5.0, size=(n, P)))
        log_w[::4] = -np.log(P)
        return _Inputs(obs, z, trans, log_w=log_w.astype(np.float32))
    return _Inputs(obs, z, trans)


def _torch_reference(nets: PearlNetworks, inputs: _Inputs, seed: int
                     ) -> dict[str, np.ndarray]:
    """Outputs of the training code path for the same inputs (and the eps it drew)."""
    agent = PearlAgent(nets, "cpu")
    with torch.inference_mode():
        obs = torch.as_tensor(inputs.obs, dtype=torch.float32)
        z = torch.as_tensor(inputs.z, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        replay = torch.Generator().manual_seed(seed)
        det = nets.actor(nets.obs_norm(obs), z, deterministic=True, with_log_prob=False)
        sto = nets.actor(nets.obs_norm(obs), z, deterministic=False, with_log_prob=False,
                         generator=gen)
        eps = torch.randn(sto.mean.shape, generator=replay)  # the draws forward() made
        # raw context rows as the replay buffer stores them: actions normalized to [-1, 1]
        raw = _physical_to_replay(nets, torch.as_tensor(inputs.transition, dtype=torch.float32))
        out = {"actor_eps": eps.numpy(),
               "actor_action_mean": nets.actor.to_physical(det.action).numpy(),
               "actor_action_sample": nets.actor.to_physical(sto.action).numpy()}
        if _particles(nets):  # the trainer's particle log-likelihood, row by row
            ll = _particle_loglik(nets, inputs.transition)
            log_w = torch.as_tensor(inputs.log_w, dtype=torch.float32)
            out.update(encoder_loglik=ll.numpy(), encoder_log_w_out=(log_w + ll).numpy())
            return out
        if _pooled(nets):
            ring, count, mu, var = nets.encoder.step(
                nets.normalize_rows(raw), torch.as_tensor(inputs.ring),
                torch.as_tensor(inputs.count))
            out.update(encoder_ring_out=ring.numpy(), encoder_count_out=count.numpy(),
                       encoder_mu=mu.numpy(), encoder_var=var.numpy())
            return out
        f = agent.encode(raw.unsqueeze(0))
        out.update(encoder_mu=f.mean[0].numpy(), encoder_var=f.var[0].numpy())
        return out


def _onnx_outputs(actor_path: Path, encoder_path: Path, inputs: _Inputs, eps: np.ndarray
                  ) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    so = session_options()
    try:
        actor = ort.InferenceSession(str(actor_path), so, providers=["CPUExecutionProvider"])
        enc = ort.InferenceSession(str(encoder_path), so, providers=["CPUExecutionProvider"])
        mean, sample = actor.run(list(ACTOR_OUTPUTS), {
            ACTOR_INPUTS[0]: inputs.obs.astype(np.float32), ACTOR_INPUTS[1]:
            inputs.z.astype(np.float32), ACTOR_INPUTS[2]: eps.astype(np.float32)})
        step: dict[str, np.ndarray] = {}
        if inputs.log_w is not None:
            log_w, loglik = enc.run(list(PARTICLE_STEP_OUTPUTS), {
                PARTICLE_STEP_INPUTS[0]: inputs.transition.astype(np.float32),
                PARTICLE_STEP_INPUTS[1]: inputs.log_w.astype(np.float32)})
            return {"actor_action_mean": mean, "actor_action_sample": sample,
                    "encoder_log_w_out": log_w, "encoder_loglik": loglik}
        if inputs.ring is not None:
            ring, count, mu, var = enc.run(list(STEP_OUTPUTS), {
                STEP_INPUTS[0]: inputs.transition.astype(np.float32),
                STEP_INPUTS[1]: inputs.ring.astype(np.float32),
                STEP_INPUTS[2]: inputs.count.astype(np.float32)})
            step = {"encoder_ring_out": ring, "encoder_count_out": count}
        else:
            mu, var = enc.run(list(ENCODER_OUTPUTS),
                              {ENCODER_INPUTS[0]: inputs.transition.astype(np.float32)})
    except Exception as exc:  # onnxruntime's own exception classes
        raise ExportError(f"onnxruntime cannot load or run the exported graphs "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                          f"bundle not written") from exc
    return {"actor_action_mean": mean, "actor_action_sample": sample, "encoder_mu": mu,
            "encoder_var": var, **step}


def check_parity(nets: PearlNetworks, actor_path: Path, encoder_path: Path, inputs: _Inputs,
                 label: str, cfg: ExportConfig) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Compare ONNX and torch on ``inputs``; (torch outputs, max errors) or ExportParityError.

    Samples whose pre-tanh value saturates the float32 tanh are compared like any other: the
    tolerance is on physical units, where saturation makes both sides agree."""
    ref = _torch_reference(nets, inputs, cfg.seed)
    got = _onnx_outputs(actor_path, encoder_path, inputs, ref["actor_eps"])
    errors: dict[str, float] = {}
    for k, v in got.items():
        want = ref[k].astype(np.float64)
        err = np.abs(v.astype(np.float64) - want)
        bound = cfg.parity_atol + cfg.parity_rtol * np.abs(want)
        if not np.all(np.isfinite(v)) or np.any(err > bound):
            i = np.unravel_index(int(np.nanargmax(np.where(np.isfinite(err), err - bound,
                                                           np.inf))), err.shape)
            raise ExportParityError(
                f"ONNX differs from torch on {label} inputs: {k} row {i[0]} entry {i[1]} is "
                f"{v[i]:.7g} in onnxruntime and {want[i]:.7g} in torch (tolerance "
                f"{cfg.parity_atol:g} + {cfg.parity_rtol:g}*|x|); bundle not written")
        errors[k] = float(err.max()) if err.size else 0.0
    return ref, errors


# --------------------------------------------------------------------------- the bundle

def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else str(f)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return _jsonable(obj.item())
    return str(obj)[:200]


def build_contract(nets: PearlNetworks, interface: EnvInterface,
                   family: Mapping[str, Any], train_cfg: Mapping[str, Any],
                   provenance: Mapping[str, Any], cfg: ExportConfig, golden_rows: int
                   ) -> Contract:
    """The typed contract, unsealed (``files`` and ``contract_sha256`` are filled when
    sealed). Every value comes from a typed input: the networks, the env interface record
    (names, units, ranges, control period, robot), the export settings; nothing is guessed
    here (ExportContractError when the record does not fit the networks)."""
    o, a, L = nets.spec.obs_dim, nets.spec.action_dim, nets.cfg.latent_dim
    if (interface.obs_dim, interface.action_dim) != (o, a):
        raise ExportContractError(
            f"the env interface names {interface.obs_dim} observation and "
            f"{interface.action_dim} action entries but the networks take {o} and {a}")
    low = tuple(float(x) for x in nets.spec.action_low)
    high = tuple(float(x) for x in nets.spec.action_high)
    if not (np.allclose(low, interface.action_low) and np.allclose(high, interface.action_high)):
        raise ExportContractError(
            f"the env interface's action bounds {interface.action_low}..{interface.action_high} "
            f"differ from the networks' {low}..{high}")
    eval_steps = int(train_cfg.get("num_steps_per_eval", 0) or 0)
    pooled = _pooled(nets)
    # the particle belief sums every row of an evaluation (train.evaluation): its window
    # is the product of Gaussians' recommendation, which covers one evaluation's context
    window = nets.encoder.window if pooled else \
        recommended_window(nets.cfg.embedding_batch_size, eval_steps)
    state = (nets.encoder.window, nets.encoder.features) if pooled else None
    P = int(nets.particles.shape[0]) if _particles(nets) else None
    io_ = declared_graph_io(o, a, L, nets.layout.width, PearlAgent(nets, "cpu").latent_input_dim,
                            state, P)
    if P is not None:
        inference = InferenceSpec(
            "particles", nets.cfg.policy_input, num_particles=P,
            reward_std=float(nets.cfg.particle_reward_std),
            particles=tuple(tuple(float(v) for v in row)
                            for row in nets.particles.detach().cpu().numpy().tolist()))
    else:
        inference = InferenceSpec(nets.cfg.inference, nets.cfg.policy_input,
                                  *(state if state is not None else (None, None)))
    return Contract(
        schema=BUNDLE_SCHEMA,
        observation=ObservationSpec(interface.obs_names, interface.obs_units,
                                    interface.obs_low, interface.obs_high),
        action=ActionSpec(interface.action_names, interface.action_joints,
                          interface.action_units, low, high, interface.command_interface),
        control_period=interface.control_period,
        latent_dim=L,
        context=ContextSpec(tuple(ContextField(f["name"], f["size"], f.get("units"))
                                  for f in nets.layout.to_contract()),
                            family.get("context_reward_key")),
        inference=inference,
        posterior=PosteriorSpec("pog-no-prior", bool(nets.cfg.use_information_bottleneck),
                                float(nets.cfg.var_floor), int(window),
                                int(nets.cfg.embedding_batch_size), eval_steps,
                                (LOG_STD_MIN, LOG_STD_MAX)),
        actor_graph=GraphSpec.declared(ACTOR_FILE, cfg.opset, io_["actor"][1]),
        encoder_graph=GraphSpec.declared(ENCODER_FILE, cfg.opset, io_["encoder"][1]),
        golden=GoldenSpec(cfg.golden_atol, cfg.golden_rtol, golden_rows, GOLDEN_FILE),
        task_family=_jsonable(dict(family)),
        robot=_jsonable(dict(interface.robot)) if interface.robot else None,
        provenance=_jsonable(dict(provenance)),
        files={})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _check_target(out: Path, cfg: ExportConfig) -> None:
    """Refuse to replace an existing bundle unless asked, and never a file."""
    if out.exists() and not cfg.overwrite:
        raise ExportError(f"{out} already exists; pass overwrite (--force) to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")


def _write_graphs(nets: PearlNetworks, tmp: Path, cfg: ExportConfig) -> tuple[Path, Path]:
    """actor.onnx and encoder.onnx in ``tmp``; ExportError when torch cannot export."""
    actor_path, encoder_path = tmp / ACTOR_FILE, tmp / ENCODER_FILE
    try:
        export_actor(nets, actor_path, cfg.opset)
        export_encoder(nets, encoder_path, cfg.opset)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300]}") from exc
    return actor_path, encoder_path


class _Parity(NamedTuple):
    """The parity-checked input sets (recorded first, then random) with their torch outputs,
    and the largest error per output over all of them."""

    sets: list[tuple[_Inputs, dict[str, np.ndarray]]]
    errors: dict[str, float]
    recorded_rows: int


def _check_all_parity(nets: PearlNetworks, paths: tuple[Path, Path], recorded: Recorded | None,
                      rnd: _Inputs, family: Mapping[str, Any], cfg: ExportConfig,
                      rng: np.random.Generator) -> _Parity:
    """Parity on the recorded inputs (when there are any) and on the random ones."""
    errors: dict[str, float] = {}
    sets: list[tuple[_Inputs, dict[str, np.ndarray]]] = []
    n_rec = 0
    if recorded is not None and len(recorded.obs):
        n_rec = len(recorded.obs)
        # z for recorded obs: spread like the prior, plus the posterior-mean-like zeros
        z = rng.standard_normal((n_rec, PearlAgent(nets, "cpu").latent_input_dim))
        z[::4] = 0.0
        rows = _transition_rows(recorded, bool(nets.cfg.use_next_obs_in_context))
        episode = int(family.get("horizon") or 0) or \
            (max(1, nets.encoder.window) if _pooled(nets) else len(rows))
        rec_in = _Inputs(recorded.obs, z, rows, **_states_for(nets, rows, episode))
        ref, err = check_parity(nets, *paths, rec_in, "recorded", cfg)
        sets.append((rec_in, ref))
        errors = {k: max(errors.get(k, 0.0), v) for k, v in err.items()}
    ref, err = check_parity(nets, *paths, rnd, "random", cfg)
    sets.append((rnd, ref))
    errors = {k: max(errors.get(k, 0.0), v) for k, v in err.items()}
    return _Parity(sets, errors, n_rec)


def _golden_arrays(sets: list[tuple[_Inputs, dict[str, np.ndarray]]], rows: int
                   ) -> dict[str, np.ndarray]:
    """golden.npz's arrays: ``rows`` rows shared over the input sets, recorded ones first."""
    per = [rows // len(sets)] * len(sets)
    per[-1] += rows - sum(per)
    golden: dict[str, list[np.ndarray]] = {}
    for (inp, ref), k in zip(sets, per):
        k = min(k, len(inp.obs))
        parts = {"actor_obs": inp.obs[:k], "actor_z": inp.z[:k],
                 "actor_eps": ref["actor_eps"][:k],
                 "actor_action_mean": ref["actor_action_mean"][:k],
                 "actor_action_sample": ref["actor_action_sample"][:k],
                 "encoder_transition": inp.transition[:k]}
        if inp.log_w is None:
            parts.update(encoder_mu=ref["encoder_mu"][:k], encoder_var=ref["encoder_var"][:k])
        else:  # spread the recorded log-weights over the whole sequence, as below
            pick = np.linspace(0, len(inp.obs) - 1, k).astype(np.int64)
            parts.update({"encoder_transition": inp.transition[pick],
                          "encoder_log_w": inp.log_w[pick],
                          "encoder_log_w_out": ref["encoder_log_w_out"][pick],
                          "encoder_loglik": ref["encoder_loglik"][pick]})
        if inp.ring is not None:
            # spread the recorded states over the whole sequence, not only its start
            pick = np.linspace(0, len(inp.obs) - 1, k).astype(np.int64)
            parts.update({"encoder_transition": inp.transition[pick],
                          "encoder_ring": inp.ring[pick], "encoder_count": inp.count[pick],
                          "encoder_ring_out": ref["encoder_ring_out"][pick],
                          "encoder_count_out": ref["encoder_count_out"][pick],
                          "encoder_mu": ref["encoder_mu"][pick],
                          "encoder_var": ref["encoder_var"][pick]})
        for name, arr in parts.items():
            golden.setdefault(name, []).append(np.asarray(arr, dtype=np.float32))
    return {k: np.concatenate(v) for k, v in golden.items()}


def _export_provenance(provenance: Mapping[str, Any] | None, cfg: ExportConfig,
                       parity: _Parity, random_rows: int, recorded: Recorded | None
                       ) -> dict[str, Any]:
    """The caller's provenance plus what this export did (time, versions, parity errors)."""
    prov = dict(provenance or {})
    prov.update({
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "exporter_git_revision": _git_revision(), "host": platform.node(),
        "torch": torch.__version__, "onnx_opset": cfg.opset,
        "parity_max_abs_error": parity.errors, "parity_recorded_rows": parity.recorded_rows,
        "parity_random_rows": random_rows,
        "parity_recorded_source": recorded.source if recorded is not None else None,
    })
    try:
        import onnxruntime

        prov["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - the train extra installs it
        pass
    return prov


def _seal_and_verify(tmp: Path, contract: Contract) -> tuple[dict[str, Any], Bundle]:
    """Fsync the files, seal the contract, and load the bundle exactly as the robot will."""
    for name in (ACTOR_FILE, ENCODER_FILE, GOLDEN_FILE):  # checkpoint.pt: save_checkpoint's
        _fsync_file(tmp / name)
    sealed = seal_contract(tmp, contract)
    _fsync_dir(tmp)
    try:
        return sealed, load_bundle(tmp)
    except BundleError as exc:
        raise ExportError(f"the written bundle fails the runtime's own checks: {exc}"
                          ) from exc


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the checked bundle to its name (an existing one is replaced in one rename)."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    _fsync_dir(out.parent)


def export_networks(nets: PearlNetworks, out_dir: str | Path, *,
                    interface: EnvInterface, family: Mapping[str, Any],
                    train_cfg: Mapping[str, Any] | None = None,
                    provenance: Mapping[str, Any] | None = None,
                    recorded: Recorded | None = None,
                    config: ExportConfig | None = None,
                    checkpoint: Mapping[str, Any] | None = None) -> ExportResult:
    """Write a parity-checked bundle for ``nets`` to ``out_dir`` (see module doc).
    ``interface``: what the contract says about the environment (its names, units, control
    period, robot; ``EnvInterface.from_env`` of the env the networks were trained in).
    ``checkpoint``: the weights-only checkpoint payload to embed (:func:`weights_only_payload`;
    required with ``config.embed_checkpoint``, refused without it)."""
    cfg = config or ExportConfig()
    out = Path(out_dir)
    _check_target(out, cfg)
    if cfg.embed_checkpoint != (checkpoint is not None):
        raise ExportError("embed_checkpoint needs the checkpoint payload to embed, and a "
                          "payload is only embedded with embed_checkpoint")
    nets = nets.cpu().eval()
    if recorded is None:
        recorded = recorded_from_rollout(nets, family, cfg.record_steps, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    rnd = _random_inputs(nets, cfg.random_rows, rng, recorded)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        paths = _write_graphs(nets, tmp, cfg)
        parity = _check_all_parity(nets, paths, recorded, rnd, family, cfg, rng)
        gold = _golden_arrays(parity.sets, cfg.golden_rows)
        np.savez(tmp / GOLDEN_FILE, **gold)
        prov = _export_provenance(provenance, cfg, parity, len(rnd.obs), recorded)
        if checkpoint is not None:
            _write_embedded_checkpoint(tmp, checkpoint, nets)
            prov["embedded_checkpoint"] = CHECKPOINT_FILE  # relative to the bundle
        contract = build_contract(nets, interface, family, train_cfg or {}, prov, cfg,
                                  len(gold["actor_obs"]))
        sealed, bundle = _seal_and_verify(tmp, contract)
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    (out / CONTRACT_FILE).stat()
    report = ParityReport(parity.errors, parity.recorded_rows, len(rnd.obs),
                          recorded.source if recorded is not None else "none")
    log.info("bundle %s written to %s (parity max error %.2e)", bundle.sha256[:12], out,
             max(parity.errors.values()))
    return ExportResult(out, bundle.sha256, report, sealed)


def export_checkpoint(checkpoint: str | Path | Checkpoint, out_dir: str | Path,
                      config: ExportConfig | None = None, recorded: Recorded | None = None
                      ) -> ExportResult:
    """``pearl-robot export``: a checkpoint file -> a bundle directory."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    nets = networks_from_checkpoint(ckpt, "cpu")
    cfg = config or ExportConfig()
    family = dict(ckpt.family or {})
    family.setdefault("name", ckpt.config.train.task_family)
    interface = interface_from_checkpoint(ckpt.env_meta, family)
    if recorded is None and ckpt.replay is not None:
        recorded = recorded_from_replay(ckpt.replay, nets)
    trainer = {k: v for k, v in (ckpt.trainer or {}).items()  # counters, not RNG states
               if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) <= 64)}
    held_out = {k: float(v) for k, v in dict((ckpt.trainer or {}).get("last_eval") or {}
                                             ).items()
                if isinstance(v, (int, float)) and np.isfinite(v)}
    prov = {"checkpoint": str(Path(ckpt.path).resolve()),
            "checkpoint_sha256": sha256_file(ckpt.path), "trainer": trainer,
            "held_out": held_out,  # the hot-swap's provenance guard (runtime/canary.py)
            "training": dict(ckpt.provenance or {}),
            "config": {"pearl": _jsonable(ckpt.config.pearl.__dict__),
                       "train": _jsonable(ckpt.config.train.__dict__)}}
    return export_networks(nets, out_dir, interface=interface, family=family,
                           train_cfg=ckpt.config.train.__dict__, provenance=prov,
                           recorded=recorded, config=cfg,
                           checkpoint=weights_only_payload(ckpt) if cfg.embed_checkpoint
                           else None)
