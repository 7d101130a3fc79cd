"""Export wrappers: the two graphs of a model bundle, speaking physical units.

In the style of rsl_rl's ``as_onnx()`` and SB3's ``OnnxablePolicy``: small ``nn.Module``s that
deep-copy what they need from :class:`PearlNetworks` (normalizer buffers, action bounds, the
network itself) so the normalization travels inside the graph and the robot can never forget
or mis-apply it.

- :class:`OnnxActor`: ``obs`` [B, obs_dim] physical, ``z`` [B, latent], ``eps`` [B, action_dim]
  -> ``action_mean`` (deterministic, tanh of the mean) and ``action_sample``
  (tanh(mean + std * eps)), both in physical units. The noise is an input so the graph stays
  a pure function (golden vectors, reproducible runs) and the caller owns the RNG.
- :class:`OnnxEncoder`: ``transition`` [B, context_dim], one row per transition with the
  fields (obs, action, reward[, next_obs]) in physical units -> ``mu``, ``var`` [B, latent].
  Inside: the action is normalized to [-1, 1] as training stores it, observations go through
  the ObsNormalizer exactly as ``PearlNetworks.normalize_rows`` does.
- :class:`OnnxBeliefStep` (inference "pooled"): ``transition``, ``ring``, ``count`` ->
  ``ring_out``, ``count_out``, ``mu``, ``var``: one step of the fixed-size belief state.
- :class:`OnnxParticleStep` (inference "pooled" with the "particles" refinement):
  ``transition``, ``log_w`` [B, P] -> ``log_w_out`` = ``log_w + loglik`` and ``loglik``, the
  row's log-likelihood under each particle (the particles are a graph constant; the
  decoder's first layer is split, so the particles' part of it is folded into a constant
  [P, hidden] at export and a tick pays one [P, hidden] pass for the rest).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from pearl_robot.core.networks import PearlNetworks
from pearl_robot.runtime.bundle import (
    ACTOR_INPUTS,
    ACTOR_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    PARTICLE_STEP_INPUTS,
    PARTICLE_STEP_OUTPUTS,
    STEP_INPUTS,
    STEP_OUTPUTS,
)

DEFAULT_OPSET = 17


class OnnxActor(nn.Module):
    """(obs, z, eps) -> (action_mean, action_sample), physical units (see module doc)."""

    def __init__(self, nets: PearlNetworks) -> None:
        super().__init__()
        self.obs_norm = copy.deepcopy(nets.obs_norm).cpu().eval()
        self.actor = copy.deepcopy(nets.actor).cpu().eval()

    def forward(self, obs: torch.Tensor, z: torch.Tensor, eps: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.actor(self.obs_norm(obs), z, deterministic=True, with_log_prob=False)
        sample = torch.tanh(out.mean + out.log_std.exp() * eps)
        return self.actor.to_physical(out.action), self.actor.to_physical(sample)

    def dummy_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        o = self.obs_norm.offset.shape[0]
        a = self.actor.action_scale.shape[0]
        L = self.actor.trunk[0].in_features - o
        return torch.zeros(1, o), torch.zeros(1, L), torch.zeros(1, a)


class OnnxEncoder(nn.Module):
    """transition [B, context_dim] (physical) -> (mu, var) per row (see module doc)."""

    def __init__(self, nets: PearlNetworks) -> None:
        super().__init__()
        self.obs_norm = copy.deepcopy(nets.obs_norm).cpu().eval()
        self.encoder = copy.deepcopy(nets.encoder).cpu().eval()
        self.register_buffer("action_scale", nets.actor.action_scale.detach().cpu().clone())
        self.register_buffer("action_bias", nets.actor.action_bias.detach().cpu().clone())
        self.obs_dim = nets.spec.obs_dim
        self.action_dim = nets.spec.action_dim
        self.use_next_obs = bool(nets.cfg.use_next_obs_in_context)
        self.slices = nets.layout.slices
        self.context_dim = nets.layout.width

    def forward(self, transition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sl = self.slices
        act = torch.clamp((transition[:, sl["action"]] - self.action_bias) / self.action_scale,
                          -1.0, 1.0)
        parts = [self.obs_norm(transition[:, sl["obs"]]), act, transition[:, sl["reward"]]]
        if self.use_next_obs:
            parts.append(self.obs_norm(transition[:, sl["next_obs"]]))
        f = self.encoder(torch.cat(parts, dim=-1))
        return f.mean, f.var

    def dummy_inputs(self) -> tuple[torch.Tensor]:
        return (torch.zeros(1, self.context_dim),)


class _StepGraph(nn.Module):
    """What the step graphs share: the networks (a CPU copy in eval mode) and the physical
    context row -> the trainer's normalized row (the action field to [-1, 1], the
    observations through the ObsNormalizer: ``PearlNetworks.normalize_rows``)."""

    def __init__(self, nets: PearlNetworks) -> None:
        super().__init__()
        self.nets = copy.deepcopy(nets).cpu().eval()
        self.layout = nets.layout
        sl = self.layout.slices["action"]
        self.a0, self.a1 = sl.start, sl.stop

    def normalized_rows(self, transition: torch.Tensor) -> torch.Tensor:
        actor = self.nets.actor
        act = torch.clamp((transition[:, self.a0:self.a1] - actor.action_bias)
                          / actor.action_scale, -1.0, 1.0)
        raw = torch.cat([transition[:, :self.a0], act, transition[:, self.a1:]], dim=-1)
        return self.nets.normalize_rows(raw)


class OnnxBeliefStep(_StepGraph):
    """(transition [B, context_dim] physical, ring [B, W, H], count [B, 1]) ->
    (ring_out, count_out, mu, var): one step of the "pooled" belief, the same torch module
    (``PooledEncoder.step``) the trainer's online evaluation runs, on the normalized row."""

    def forward(self, transition: torch.Tensor, ring: torch.Tensor, count: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.nets.encoder.step(self.normalized_rows(transition), ring, count)

    def dummy_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc = self.nets.encoder
        return (torch.zeros(1, self.layout.width), torch.zeros(1, enc.window, enc.features),
                torch.zeros(1, 1))


class OnnxParticleStep(_StepGraph):
    """(transition [B, context_dim] physical, log_w [B, P]) -> (log_w_out, loglik) [B, P]:
    one step of the particle belief, each row scored under every particle by the trainer's
    own ``PearlAgent.particle_log_likelihood`` (``ContextRewardDecoder.log_likelihood`` on
    the normalized row as a context of one)."""

    def __init__(self, nets: PearlNetworks) -> None:
        super().__init__(nets)
        self.std = float(nets.cfg.particle_reward_std)

    def forward(self, transition: torch.Tensor, log_w: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        nets = self.nets
        rows = self.normalized_rows(transition).unsqueeze(1)  # [B, 1, width]: one row
        loglik = nets.context_decoder.log_likelihood(rows, nets.particles, self.std)
        return log_w + loglik, loglik

    def dummy_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros(1, self.layout.width),
                torch.zeros(1, self.nets.particles.shape[0]))


def export_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path,
                input_names: tuple[str, ...], output_names: tuple[str, ...],
                opset: int = DEFAULT_OPSET) -> None:
    """TorchScript-based exporter (``dynamo=False``: measured slightly faster at batch 1 on
    this machine, machine-limits.md) with a dynamic batch axis on every input and output."""
    axes = {n: {0: "batch"} for n in (*input_names, *output_names)}
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is deprecated upstream but still the faster graph here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, inputs, str(path), input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)


def export_actor(nets: PearlNetworks, path: Path, opset: int = DEFAULT_OPSET) -> OnnxActor:
    wrapper = OnnxActor(nets)
    export_onnx(wrapper, wrapper.dummy_inputs(), path, ACTOR_INPUTS, ACTOR_OUTPUTS, opset)
    return wrapper


def export_encoder(nets: PearlNetworks, path: Path, opset: int = DEFAULT_OPSET
                   ) -> OnnxEncoder | OnnxBeliefStep | OnnxParticleStep:
    """The encoder graph of the model's inference mode: per-transition factors ("pog"),
    the belief step ("pooled") or the particle step ("pooled" with the "particles"
    refinement: the belief the trainer evaluates such a model with)."""
    if nets.cfg.inference == "pooled" and nets.cfg.refinement == "particles":
        pstep = OnnxParticleStep(nets)
        export_onnx(pstep, pstep.dummy_inputs(), path, PARTICLE_STEP_INPUTS,
                    PARTICLE_STEP_OUTPUTS, opset)
        return pstep
    if nets.cfg.inference == "pooled":
        step = OnnxBeliefStep(nets)
        export_onnx(step, step.dummy_inputs(), path, STEP_INPUTS, STEP_OUTPUTS, opset)
        return step
    if nets.cfg.inference != "pog":
        raise ValueError(f"inference {nets.cfg.inference!r} has no deployable encoder (the "
                         f"privileged reference needs the true task parameters)")
    wrapper = OnnxEncoder(nets)
    export_onnx(wrapper, wrapper.dummy_inputs(), path, ENCODER_INPUTS, ENCODER_OUTPUTS, opset)
    return wrapper
