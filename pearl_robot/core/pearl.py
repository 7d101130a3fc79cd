"""PEARL: posterior inference, acting, and the soft actor-critic update conditioned on z.

Reference: Rakelly et al., "Efficient Off-Policy Meta-Reinforcement Learning via Probabilistic
Context Variables" (ICML 2019); update order and gradient routing as in oyster
``rlkit/torch/sac/sac.py`` (see ../shared/reference/pearl-oyster.md section 1.3):

- the encoder is trained only through the Q (Bellman) loss plus the KL term;
- z is detached for the actor, V and the targets;
- "reference" variant: Q1, Q2, V, target V, fixed temperature (reward_scale = 1/alpha);
  "modern" variant: twin Q with twin target Q and a learned temperature.

Two deliberate engineering changes, same maths: the V and policy losses (independent graphs) are
backpropagated together, and the policy loss does not compute gradients for Q's weights (they
would be zeroed before Q's next step anyway).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pearl_robot.core.config import PearlConfig
from pearl_robot.core.inference import StepFunction, StepOutput, policy_latent_dim
from pearl_robot.core.networks import EnvSpec, PearlNetworks
from pearl_robot.core.posterior import kl_to_standard_normal, prior, product_of_gaussians, rsample
from pearl_robot.core.types import Posterior, RLBatch
from pearl_robot.errors import PearlRobotError

PRIVILEGED_VAR = 1e-6
"""Variance the "privileged" reference reports: it knows the task."""


class TaskLabels(NamedTuple):
    """Privileged task parameters of the tasks in a batch (``tasks.base.LabelSpec``)."""

    values: torch.Tensor
    """Normalized labels [tasks, P]."""
    mask: torch.Tensor
    """1 where the label is known, 0 where the data lacks it [tasks, P]."""


class TrainingDivergedError(PearlRobotError):
    """A loss or gradient became NaN/inf; the message says which and what usually causes it."""


def polyak_update(params: list[torch.Tensor], target_params: list[torch.Tensor],
                  tau: float) -> None:
    """In place ``target <- (1 - tau) * target + tau * param``. tau = 1 copies the online
    weights; tau = 0 leaves the target unchanged. One fused foreach call for all tensors."""
    with torch.no_grad():
        torch._foreach_lerp_(target_params, params, tau)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Evaluate ``module`` without building gradients for its parameters (inputs still get
    them): used where the policy loss backpropagates through Q into the actions only."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def _adam(params, lr: float) -> torch.optim.Adam:  # noqa: ANN001
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused unsupported for this device/build
        return torch.optim.Adam(params, lr=lr, foreach=True)


class PearlAgent:
    """The acting side: infer q(z|c), sample z, choose actions. Used by the sampler and the
    evaluation protocol; holds no optimizer and changes no weights."""

    def __init__(self, nets: PearlNetworks, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> None:
        self.nets = nets
        self.cfg: PearlConfig = nets.cfg
        self.device = torch.device(device)
        self.generator = generator

    def context_to_tensor(self, context: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(context, dtype=torch.float32, device=self.device)

    def encode(self, context: torch.Tensor):  # noqa: ANN201 - GaussianFactors
        """Per-transition factors for raw context rows [..., N, ctx_dim] ("pog" only)."""
        return self.nets.encoder(self.nets.normalize_rows(context))

    def infer_posterior(self, context: torch.Tensor, mask: torch.Tensor | None = None,
                        labels: torch.Tensor | None = None) -> Posterior:
        """q(z | c) for context [tasks, N, ctx_dim]; N = 0 gives the prior. ``mask``
        [tasks, N] marks the rows in each context (None: all). ``labels`` [tasks, P] are the
        true normalized task parameters, used (and required) only by "privileged"."""
        cfg = self.cfg
        batch = tuple(context.shape[:-2])
        if cfg.inference == "privileged":
            if labels is None:
                raise ValueError("privileged inference needs the tasks' labels")
            mean = torch.zeros((*batch, cfg.latent_dim), device=self.device)
            mean[..., :labels.shape[-1]] = labels
            return Posterior(mean, torch.full_like(mean, PRIVILEGED_VAR))
        if context.shape[-2] == 0:
            return prior(batch, cfg.latent_dim, self.device)
        if cfg.inference == "pooled":
            return self.nets.encoder(self.nets.normalize_rows(context), mask)
        factors = self.encode(context)
        if mask is not None:  # rows outside the context: zero precision, no evidence
            m = mask.unsqueeze(-1)
            big = torch.ones_like(factors.var) * 1e12
            factors = type(factors)(factors.mean * m, torch.where(m > 0, factors.var, big))
        if not cfg.use_information_bottleneck:
            if mask is not None:
                n = torch.clamp(mask.sum(-1, keepdim=True), min=1.0)
                return Posterior(factors.mean.sum(dim=-2) / n,
                                 torch.zeros_like(factors.mean[..., 0, :]))
            return Posterior(factors.mean.mean(dim=-2), torch.zeros_like(factors.mean[..., 0, :]))
        return product_of_gaussians(factors)

    def sample_z(self, post: Posterior) -> torch.Tensor:
        """The actor's and critics' latent input for a belief (``PearlConfig.policy_input``):
        a sample of z (PEARL), or the belief's mean and standard deviation."""
        if not self.cfg.task_inference:
            return torch.zeros((*post.mean.shape[:-1], self.latent_input_dim),
                               device=post.mean.device, dtype=post.mean.dtype)
        if self.cfg.policy_input == "belief":
            return torch.cat([post.mean, torch.sqrt(post.var)], dim=-1)
        if not self.cfg.use_information_bottleneck:
            return post.mean
        return rsample(post, self.generator)

    def particle_log_likelihood(self, context: torch.Tensor) -> torch.Tensor:
        """"particles" refinement: summed log-likelihood of raw context rows [T, N, width]
        under each of the model's particles, [T, K] (add the rows of each new trajectory to
        a running sum: the posterior's log-weights)."""
        dec = self.nets.context_decoder
        return dec.log_likelihood(self.nets.normalize_rows(context), self.nets.particles,
                                  self.cfg.particle_reward_std)

    def sample_particle_z(self, log_weights: torch.Tensor) -> torch.Tensor:
        """The actor's latent input drawn from the particle belief with log-weights [T, K]:
        one particle per task (posterior sampling; uniform weights: the prior)."""
        p = torch.softmax(log_weights, dim=-1)
        idx = torch.multinomial(p, 1, generator=self.generator)[:, 0]
        return self.nets.particles[idx]

    def step_function(self) -> StepFunction:
        """The "pooled" belief step on replay-layout rows (actions in [-1, 1]) as a numpy
        function for :class:`core.inference.StepBelief`: the torch module the bundle's step
        graph is exported from, so evaluation runs the robot's math."""
        enc = self.nets.encoder
        dev = self.device

        @torch.inference_mode()
        def step(rows: np.ndarray, ring: np.ndarray, count: np.ndarray) -> StepOutput:
            t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=dev)  # noqa: E731
            r2, c2, mu, var = enc.step(self.nets.normalize_rows(t(rows)), t(ring), t(count))
            return StepOutput(*(x.cpu().numpy() for x in (r2, c2, mu, var)))

        return step

    @property
    def latent_input_dim(self) -> int:
        return policy_latent_dim(self.cfg.latent_dim, self.cfg.policy_input)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, z: torch.Tensor, deterministic: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
        """(physical action, normalized action) for one observation or a batch of them."""
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        single = o.dim() == 1
        if single:
            o = o.unsqueeze(0)
        zz = z.reshape(-1, self.latent_input_dim)
        if zz.shape[0] != o.shape[0]:
            zz = zz.expand(o.shape[0], -1)
        out = self.nets.actor(self.nets.obs_norm(o), zz, deterministic=deterministic,
                              with_log_prob=False, generator=self.generator)
        a = out.action
        phys = self.nets.actor.to_physical(a)
        if single:
            a, phys = a[0], phys[0]
        return phys.cpu().numpy().astype(np.float64), a.cpu().numpy()


class PearlLearner:
    """Owns the optimizers and performs one gradient step; returns metrics, logs nothing."""

    def __init__(self, nets: PearlNetworks, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> None:
        self.nets = nets
        self.cfg = nets.cfg
        self.device = torch.device(device)
        self.agent = PearlAgent(nets, device, generator)
        self.generator = generator
        cfg = self.cfg
        self.policy_opt = _adam(nets.actor.parameters(), cfg.policy_lr)
        self.qf_opt = _adam(nets.qf.parameters(), cfg.qf_lr)
        inference_params = list(nets.encoder.parameters())
        for name in ("decoder", "context_decoder"):
            if hasattr(nets, name):
                inference_params += list(getattr(nets, name).parameters())
        self.context_opt = _adam(inference_params, cfg.context_lr)
        if cfg.sac_variant == "reference":
            self.vf_opt = _adam(nets.vf.parameters(), cfg.vf_lr)
            self._target_pairs = (list(nets.vf.parameters()), list(nets.target_vf.parameters()))
        else:
            self.alpha_opt = _adam([nets.log_alpha], cfg.alpha_lr)
            self._target_pairs = (list(nets.qf.parameters()), list(nets.target_qf.parameters()))
        self.target_entropy = (cfg.target_entropy if cfg.target_entropy is not None
                               else -float(nets.spec.action_dim))
        self.num_updates = 0

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"policy": self.policy_opt, "qf": self.qf_opt, "context": self.context_opt}
        if self.cfg.sac_variant == "reference":
            opts["vf"] = self.vf_opt
        else:
            opts["alpha"] = self.alpha_opt
        return opts

    def update(self, batch: RLBatch, context: torch.Tensor,
               context_mask: torch.Tensor | None = None,
               labels: TaskLabels | None = None) -> dict[str, float]:
        """One gradient step on RL batch [T, B, .] and context [T, N, ctx_dim] (rows where
        ``context_mask`` [T, N] is 0 are not in the context). ``labels``: the tasks'
        privileged parameters ("pooled" supervision, "privileged" input)."""
        cfg, nets = self.cfg, self.nets
        T, B = batch.obs.shape[:2]
        obs = nets.obs_norm(batch.obs.reshape(T * B, -1))
        next_obs = nets.obs_norm(batch.next_obs.reshape(T * B, -1))
        actions = batch.actions.reshape(T * B, -1)
        rewards = batch.rewards.reshape(T * B, 1)
        not_done = 1.0 - batch.terminals.reshape(T * B, 1)

        # --- task inference. pog: the encoder learns from the Bellman error and the KL only
        # (PEARL); pooled: from its own losses (and the Bellman error if configured)
        post = self.agent.infer_posterior(context, context_mask,
                                          labels.values if labels is not None else None)
        # "particles": the actor-critic is conditioned on what a particle is (the task's
        # labels), so the policy learns to go where a hypothesis says and posterior sampling
        # over the particles explores; otherwise a sample of the belief (PEARL)
        z = self._hypothesis_z(post, labels) if cfg.refinement == "particles" else \
            self.agent.sample_z(post)
        z_rep = z.unsqueeze(1).expand(T, B, -1).reshape(T * B, -1)
        z_det = z_rep.detach()
        aux: dict[str, torch.Tensor] = {}
        if cfg.inference == "pooled":
            kl, inference_loss, aux = self._pooled_losses(post, labels, obs, actions, next_obs,
                                                          rewards, T, B)
            inference_loss = inference_loss + self._context_decoder_loss(
                post, labels, context, context_mask, aux)
            kl_loss = cfg.kl_lambda * kl + inference_loss
            if not cfg.critic_trains_encoder:
                z_rep = z_det
        else:
            kl = kl_to_standard_normal(post).sum() \
                if cfg.use_information_bottleneck and cfg.task_inference \
                and cfg.inference == "pog" else torch.zeros((), device=self.device)
            kl_loss = cfg.kl_lambda * kl

        q_pred = nets.qf(torch.cat([obs, actions, z_rep], dim=-1))  # [2, TB, 1]
        with torch.no_grad():  # Bellman target
            if cfg.sac_variant == "reference":
                next_v = nets.target_vf(torch.cat([next_obs, z_det], dim=-1))[0]
            else:
                nxt = nets.actor(next_obs, z_det, generator=self.generator)
                alpha_t = nets.log_alpha.exp()
                next_q = nets.target_qf(torch.cat([next_obs, nxt.action, z_det], dim=-1))
                next_v = next_q.min(dim=0).values - alpha_t * nxt.log_prob.unsqueeze(-1)
            q_target = cfg.reward_scale * rewards + not_done * cfg.discount * next_v
        qf_loss = F.mse_loss(q_pred[0], q_target) + F.mse_loss(q_pred[1], q_target)

        self.qf_opt.zero_grad(set_to_none=True)
        self.context_opt.zero_grad(set_to_none=True)
        (qf_loss + kl_loss).backward()
        self.qf_opt.step()
        self.context_opt.step()

        # --- actor (and V / temperature), with z detached
        pol = nets.actor(obs, z_det, generator=self.generator)
        log_pi = pol.log_prob.unsqueeze(-1)
        with frozen(nets.qf):  # Q updated above; gradients only into the new actions
            min_q_new = nets.qf(torch.cat([obs, pol.action, z_det], dim=-1)).min(dim=0).values
        reg = cfg.policy_mean_reg * pol.mean.pow(2).mean() + \
            cfg.policy_std_reg * pol.log_std.pow(2).mean()
        metrics_extra: dict[str, torch.Tensor] = {}
        if cfg.sac_variant == "reference":
            v_pred = nets.vf(torch.cat([obs, z_det], dim=-1))[0]
            v_target = (min_q_new - log_pi).detach()
            vf_loss = F.mse_loss(v_pred, v_target)
            policy_loss = (log_pi - min_q_new).mean() + reg
            self.vf_opt.zero_grad(set_to_none=True)
            self.policy_opt.zero_grad(set_to_none=True)
            (vf_loss + policy_loss).backward()
            self.vf_opt.step()
            self.policy_opt.step()
            metrics_extra["losses/vf"] = vf_loss.detach()
        else:
            alpha = nets.log_alpha.exp().detach()
            policy_loss = (alpha * log_pi - min_q_new).mean() + reg
            alpha_loss = -(nets.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
            self.policy_opt.zero_grad(set_to_none=True)
            self.alpha_opt.zero_grad(set_to_none=True)
            (policy_loss + alpha_loss).backward()
            self.policy_opt.step()
            self.alpha_opt.step()
            metrics_extra["losses/alpha"] = alpha_loss.detach()
            metrics_extra["charts/alpha"] = alpha
        polyak_update(*self._target_pairs, cfg.soft_target_tau)
        self.num_updates += 1

        metrics_extra.update(aux)
        stats = torch.stack([qf_loss.detach(), kl.detach(), policy_loss.detach(),
                             q_pred.detach().mean(), log_pi.detach().mean(),
                             post.var.detach().mean(), post.mean.detach().abs().mean(),
                             *(v.detach() for v in metrics_extra.values())]).tolist()
        names = ["losses/qf", "losses/kl", "losses/policy", "charts/q_mean",
                 "charts/log_pi", "posterior/var_mean", "posterior/abs_mean_mean",
                 *metrics_extra.keys()]
        metrics = dict(zip(names, stats))
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDivergedError(
                f"non-finite {', '.join(bad)} at gradient step {self.num_updates} "
                f"(metrics: {metrics}). Usual causes: reward_scale too large for the reward "
                f"range, a learning rate too high, or NaN/inf in the data (check the replay "
                f"buffers / logged datasets with `pearl-robot data check`).")
        return metrics


    def update_inference(self, batch: RLBatch, context: torch.Tensor,
                         context_mask: torch.Tensor | None = None,
                         labels: TaskLabels | None = None) -> dict[str, float]:
        """One gradient step of the "pooled" belief alone (encoder, head, reward decoder) on
        its own losses; the actor-critic is untouched."""
        if self.cfg.inference != "pooled":
            raise ValueError("update_inference is for inference 'pooled'")
        nets = self.nets
        T, B = batch.obs.shape[:2]
        post = self.agent.infer_posterior(context, context_mask)
        kl, loss, aux = self._pooled_losses(
            post, labels, nets.obs_norm(batch.obs.reshape(T * B, -1)),
            batch.actions.reshape(T * B, -1), nets.obs_norm(batch.next_obs.reshape(T * B, -1)),
            batch.rewards.reshape(T * B, 1), T, B)
        loss = loss + self._context_decoder_loss(post, labels, context, context_mask, aux)
        self.context_opt.zero_grad(set_to_none=True)
        (self.cfg.kl_lambda * kl + loss).backward()
        self.context_opt.step()
        return {k: float(v.detach()) for k, v in aux.items()}

    def _hypothesis_z(self, post: Posterior, labels: TaskLabels | None) -> torch.Tensor:
        """z shaped like a particle of the "particles" refinement, for each task [T, L]: the
        true label where it is known, a belief sample where it is masked (or where the task
        has no labels at all), N(0, 1) noise in the dims beyond the labels (as the particles'
        free dims are prior draws). Detached: nothing trains the belief through it."""
        z = rsample(Posterior(post.mean.detach(), post.var.detach()), self.generator)
        P = 0 if labels is None else labels.values.shape[-1]
        if not P:
            return z
        noise = torch.randn((z.shape[0], self.cfg.latent_dim - P), device=self.device,
                            generator=self.generator)
        m = labels.mask
        return torch.cat([m * labels.values + (1.0 - m) * z[:, :P], noise], dim=-1)

    def _context_decoder_loss(self, post: Posterior, labels: TaskLabels | None,
                              context: torch.Tensor, context_mask: torch.Tensor | None,
                              aux: dict[str, torch.Tensor]) -> torch.Tensor:
        """Squared error of the context-reward decoder ("particles" refinement) on the
        context rows. Its z is what a particle will be: the true label where it is known, a
        belief sample where it is masked, and N(0, 1) noise in the dims no label explains
        (so the decoder learns to ignore them, as the particles' free dims are prior draws);
        z is detached: the decoder is a likelihood model, not a loss for the belief."""
        if self.cfg.refinement != "particles":
            return torch.zeros((), device=self.device)
        dec = self.nets.context_decoder
        T = context.shape[0]
        L = self.cfg.latent_dim
        z = self._hypothesis_z(post, labels)
        rows = self.nets.normalize_rows(context)
        pred = dec(rows, z.unsqueeze(1).expand(T, rows.shape[1], L))
        err = (pred - dec.rewards(rows)).pow(2)[..., 0]  # [T, N]
        if context_mask is None:
            loss = err.mean()
        else:
            loss = (err * context_mask).sum() / torch.clamp(context_mask.sum(), min=1.0)
        aux["losses/context_reward_rec"] = loss
        return loss

    def _pooled_losses(self, post: Posterior, labels: TaskLabels | None, obs: torch.Tensor,
                       actions: torch.Tensor, next_obs: torch.Tensor, rewards: torch.Tensor,
                       T: int, B: int
                       ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(KL of the unlabelled dims, weighted task + reward losses, metrics) of the
        "pooled" belief. The first P belief dims estimate the P normalized task labels (a
        Gaussian likelihood: the belief's variance is trained to be the error it makes);
        masked labels contribute nothing. The reward decoder sees z sampled from the belief
        and the RL batch's transitions of the same task; the KL to N(0, I) regularizes the
        dims that no label explains (a labelled dim already has its likelihood)."""
        cfg = self.cfg
        P = 0 if labels is None else labels.values.shape[-1]
        if P > cfg.latent_dim:
            raise ValueError(f"{P} task labels need latent_dim >= {P}, got {cfg.latent_dim}")
        zero = torch.zeros((), device=self.device)
        aux: dict[str, torch.Tensor] = {}
        task_loss = zero
        if P and cfg.task_loss_weight > 0:
            mu, var = post.mean[..., :P], post.var[..., :P]
            m = labels.mask
            nll = 0.5 * ((labels.values - mu) ** 2 / var + torch.log(var))
            n = m.sum()
            task_loss = (nll * m).sum() / torch.clamp(n, min=1.0)
            err = (((labels.values - mu) ** 2) * m).sum() / torch.clamp(n, min=1.0)
            aux["losses/task_nll"] = task_loss
            aux["inference/label_rmse"] = torch.sqrt(err)
        rec_loss = zero
        if cfg.reward_loss_weight > 0:
            zs = rsample(post, self.generator)
            zs = zs.unsqueeze(1).expand(T, B, -1).reshape(T * B, -1)
            pred = self.nets.decoder(obs, actions, next_obs, zs)
            rec_loss = F.mse_loss(pred, rewards)
            aux["losses/reward_rec"] = rec_loss
        free = Posterior(post.mean[..., P:], post.var[..., P:])
        kl = kl_to_standard_normal(free).sum() if free.mean.shape[-1] else zero
        return kl, cfg.task_loss_weight * task_loss + cfg.reward_loss_weight * rec_loss, aux


def build(cfg: PearlConfig, spec: EnvSpec, device: torch.device | str = "cpu",
          seed: int = 0) -> tuple[PearlNetworks, PearlLearner]:
    """Networks and learner, initialised from ``seed`` (same seed, same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = PearlNetworks(cfg, spec).to(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + 1)
    return nets, PearlLearner(nets, device, gen)
