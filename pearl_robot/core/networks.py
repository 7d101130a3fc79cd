"""PEARL's networks: context encoder, tanh-Gaussian actor, Q ensemble, V.

Speed matters here (2 CPU cores): the two Q functions are one ``EnsembleMLP`` evaluated with
batched matmuls (``baddbmm``) instead of two modules, and every network takes the whole
[tasks x batch] block at once. Initialisation follows the reference (fan-in uniform hidden
weights, bias 0.1, small uniform output layer).

Networks see observations through a fixed affine :class:`ObsNormalizer` (identity unless a task
family sets scales) and actions normalized to [-1, 1]; the action bounds are buffers on the actor
so the exported graph can output physical units.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pearl_robot.core.config import PearlConfig
from pearl_robot.core.inference import ContextLayout, policy_latent_dim
from pearl_robot.core.posterior import information_posterior
from pearl_robot.core.types import GaussianFactors, PolicyOutput, Posterior

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class EnvSpec(NamedTuple):
    """What the networks need to know about a task family's environments."""

    obs_dim: int
    action_dim: int
    action_low: np.ndarray
    action_high: np.ndarray

    @classmethod
    def from_env(cls, env) -> EnvSpec:  # noqa: ANN001 - any MetaEnv
        return cls(int(env.obs_dim), int(env.action_dim),
                   np.asarray(env.action_low, dtype=np.float64),
                   np.asarray(env.action_high, dtype=np.float64))


def context_layout(spec: EnvSpec, use_next_obs: bool) -> ContextLayout:
    """The context row layout of a model for these environments (``core.inference``)."""
    return ContextLayout(spec.obs_dim, spec.action_dim, use_next_obs)


def context_dim(spec: EnvSpec, use_next_obs: bool) -> int:
    """Width of one context row: obs, action, reward (+ next obs)."""
    return context_layout(spec, use_next_obs).width


class EnsembleMLP(nn.Module):
    """``n`` independent MLPs evaluated together: input [n, N, in] (or [N, in], shared)."""

    def __init__(self, n: int, in_dim: int, hidden: tuple[int, ...], out_dim: int,
                 last_init: float = 3e-3) -> None:
        super().__init__()
        sizes = (in_dim, *hidden, out_dim)
        self.n = n
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = torch.empty(n, a, b)
            bias = torch.empty(n, 1, b)
            if i < len(sizes) - 2:
                bound = 1.0 / math.sqrt(a)
                nn.init.uniform_(w, -bound, bound)
                nn.init.constant_(bias, 0.1)
            else:
                nn.init.uniform_(w, -last_init, last_init)
                nn.init.uniform_(bias, -last_init, last_init)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.relu(x)
        return x


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, last_init: float = 3e-3
        ) -> nn.Sequential:
    """Plain ReLU MLP with the reference initialisation."""
    layers: list[nn.Module] = []
    sizes = (in_dim, *hidden)
    for a, b in zip(sizes[:-1], sizes[1:]):
        lin = nn.Linear(a, b)
        bound = 1.0 / math.sqrt(a)
        nn.init.uniform_(lin.weight, -bound, bound)
        nn.init.constant_(lin.bias, 0.1)
        layers += [lin, nn.ReLU()]
    out = nn.Linear(sizes[-1], out_dim)
    nn.init.uniform_(out.weight, -last_init, last_init)
    nn.init.uniform_(out.bias, -last_init, last_init)
    layers.append(out)
    return nn.Sequential(*layers)


class ObsNormalizer(nn.Module):
    """Fixed affine observation scaling (x - offset) / scale, kept as buffers so it saves with
    the weights and is baked into the exported graphs."""

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(obs_dim))
        self.register_buffer("scale", torch.ones(obs_dim))

    def set(self, offset: np.ndarray, scale: np.ndarray) -> None:
        if np.any(np.asarray(scale) <= 0):
            raise ValueError("observation scales must be > 0")
        self.offset.copy_(torch.as_tensor(offset, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.offset) / self.scale


class ContextEncoder(nn.Module):
    """Maps each context row independently to a Gaussian factor (mean, var) over z.

    Permutation invariance comes from combining the factors with a product of Gaussians
    (``core.posterior``), never from the network. Without the information bottleneck the
    network outputs a point estimate; its "variance" is 1 so the same combination code gives
    the mean over transitions (precision-weighted with equal weights).
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], latent_dim: int,
                 use_ib: bool, var_floor: float) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.use_ib = use_ib
        self.var_floor = var_floor
        self.net = mlp(in_dim, hidden, 2 * latent_dim if use_ib else latent_dim)

    def forward(self, context: torch.Tensor) -> GaussianFactors:
        out = self.net(context)
        if not self.use_ib:
            return GaussianFactors(out, torch.ones_like(out))
        mean, raw = out.split(self.latent_dim, dim=-1)
        var = torch.clamp(F.softplus(raw), min=self.var_floor)
        return GaussianFactors(mean, var)


_MASKED_OFFSET = 1e9  # subtracted from rows outside the context before max pooling


class PooledEncoder(nn.Module):
    """Permutation-invariant set encoder with a Gaussian belief head ("pooled" inference).

    Each context row goes through the same MLP ``phi`` to a feature vector; the features of
    the rows in the context are pooled by their mean and their max, and the head maps
    ``[mean, max, log(1 + n) / log(1 + window)]`` to the belief's mean and variance over z.
    Unlike a product of per-transition Gaussians, the head sees all the evidence at once, so
    it can intersect what single transitions only constrain (a point-robot reward says "the
    goal is on this circle"; three circles say where). An empty context gives the prior
    N(0, I), as PEARL's convention does.

    One piece of math serves both uses: :meth:`forward` pools a batch of contexts with a row
    mask (training), :meth:`step` advances a fixed-size state by one transition (the online
    belief: a ring of the newest ``window`` features and their count), and both call
    :meth:`pool`. The step is exported as the bundle's step graph.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], features: int,
                 head_hidden: tuple[int, ...], latent_dim: int, var_floor: float,
                 window: int, head: str = "mlp", rank: int = 1) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.rank = rank
        if head == "information":  # each row's features are its factor: r x (a, y)
            features = rank * (latent_dim + 1)
        self.features = features
        self.var_floor = var_floor
        self.window = window
        self.head_kind = head
        self.phi = mlp(in_dim, hidden, features, last_init=1.0 / math.sqrt(hidden[-1]))
        if head == "anchors":
            # K anchors in z space, each with a prior logit and a per-dim spread
            self.anchors = nn.Parameter(torch.randn(features, latent_dim) * 0.7)
            self.anchor_logit = nn.Parameter(torch.zeros(features))
            self.anchor_raw_var = nn.Parameter(torch.full((features, latent_dim), -2.0))
        elif head == "mlp":
            self.head = mlp(2 * features + 1, head_hidden, 2 * latent_dim)
        self._log_window = math.log1p(window)

    def _anchor_belief(self, h: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
        """Moment-matched posterior over the anchors: logits = prior + summed evidence."""
        logits = self.anchor_logit + (h * m).sum(dim=-2)
        p = torch.softmax(logits, dim=-1).unsqueeze(-1)  # [..., K, 1]
        c = self.anchors
        mean = (p * c).sum(dim=-2)
        spread = F.softplus(self.anchor_raw_var) + (c - mean.unsqueeze(-2)) ** 2
        return mean, (p * spread).sum(dim=-2)

    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> Posterior:
        """Belief from features ``h`` [..., N, H] and row mask [..., N] (1 = in context).

        Masking is arithmetic (no ``where``/``full_like``): the exported step graph is then a
        short chain of fused ops, which is what the 20 Hz tick pays for."""
        m = mask.unsqueeze(-1)
        n = mask.sum(dim=-1, keepdim=True)  # [..., 1]
        full = (n > 0).to(h.dtype)  # 0 for an empty context: the belief is the prior
        if self.head_kind == "anchors":
            mu, var = self._anchor_belief(h, m)
        elif self.head_kind == "information":
            r, k = self.rank, self.latent_dim
            a = h[..., :r * k].unflatten(-1, (r, k))
            mu, var = information_posterior(a, h[..., r * k:], mask)
        else:
            mean = (h * m).sum(dim=-2) / torch.clamp(n, min=1.0)
            mx = (h + (m - 1.0) * _MASKED_OFFSET).amax(dim=-2) * full
            out = self.head(torch.cat([mean, mx, torch.log1p(n) / self._log_window], dim=-1))
            mu, raw = out.split(self.latent_dim, dim=-1)
            var = F.softplus(raw)
        var = torch.clamp(var, min=self.var_floor)
        return Posterior(mu * full, var * full + (1.0 - full))

    def forward(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> Posterior:
        """Belief of each context: normalized rows [..., N, width], mask [..., N]."""
        if mask is None:
            mask = torch.ones(rows.shape[:-1], device=rows.device, dtype=rows.dtype)
        return self.pool(self.phi(rows), mask)

    def step(self, row: torch.Tensor, ring: torch.Tensor, count: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One online update: normalized row [B, width], ring [B, W, H] (oldest first),
        count [B, 1] -> (ring', count', mean, var). The newest ``count'`` ring slots are the
        context, so the result equals :meth:`forward` on those rows."""
        h = self.phi(row)
        ring2 = torch.cat([ring[:, 1:], h.unsqueeze(1)], dim=1)
        w = self.window  # fixed by the model: the exported graph's ring length
        count2 = torch.clamp(count + 1.0, max=float(w))
        pos = torch.arange(w, device=row.device, dtype=row.dtype).unsqueeze(0)
        mask = (pos >= (float(w) - count2)).to(row.dtype)
        post = self.pool(ring2, mask)
        return ring2, count2, post.mean, post.var


class RewardDecoder(nn.Module):
    """r(s, a, s', z): the label-free evidence bound's likelihood term (VariBAD-style reward
    reconstruction). Trained with z sampled from the belief, it makes z carry what predicts
    the task's rewards, on simulation and robot logs alike."""

    def __init__(self, obs_dim: int, action_dim: int, latent_dim: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(2 * obs_dim + action_dim + latent_dim, hidden, 1,
                       last_init=1.0 / math.sqrt(hidden[-1]))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor,
                z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action, next_obs, z], dim=-1))


class ContextRewardDecoder(nn.Module):
    """The context reward from a context row's other fields and z: the likelihood the
    "particles" refinement weighs its hypotheses of z by. It reads exactly what a context row
    holds (normalized obs, action, [next obs]), so it scores the robot's own context, and it
    predicts the *context* reward (the sparse one where the family has it), which is the
    evidence exploration gathers."""

    def __init__(self, layout: ContextLayout, latent_dim: int, hidden: tuple[int, ...]
                 ) -> None:
        super().__init__()
        sl = layout.slices
        self._reward_col = sl["reward"].start
        self.net = mlp(layout.width - 1 + latent_dim, hidden, 1,
                       last_init=1.0 / math.sqrt(hidden[-1]))

    def inputs(self, rows: torch.Tensor) -> torch.Tensor:
        """Normalized rows [..., width] without their reward column."""
        r = self._reward_col
        return torch.cat([rows[..., :r], rows[..., r + 1:]], dim=-1)

    def forward(self, rows: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Predicted context reward [..., 1] of normalized rows [..., width] under z [..., L]."""
        return self.net(torch.cat([self.inputs(rows), z], dim=-1))

    def rewards(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows' context rewards [..., 1] (the decoder's targets)."""
        return rows[..., self._reward_col:self._reward_col + 1]

    @torch.no_grad()
    def log_likelihood(self, rows: torch.Tensor, z: torch.Tensor, std: float,
                       chunk: int = 64) -> torch.Tensor:
        """Summed log-likelihood of each task's rows under each hypothesis: normalized rows
        [T, N, width], particles z [K, L] -> [T, K]. The first layer is split into its row
        and z parts, so the cost is one [T, N, K, hidden] pass, taken ``chunk`` rows at a
        time to bound memory."""
        first = self.net[0]
        d_in = rows.shape[-1] - 1
        w_row, w_z = first.weight[:, :d_in], first.weight[:, d_in:]
        zpart = z @ w_z.T + first.bias  # [K, H]
        x_all = self.inputs(rows) @ w_row.T  # [T, N, H]
        target = self.rewards(rows)  # [T, N, 1]
        out = torch.zeros(rows.shape[0], z.shape[0], device=rows.device, dtype=rows.dtype)
        inv = 0.5 / (std * std)
        for n0 in range(0, rows.shape[1], chunk):
            h = x_all[:, n0:n0 + chunk, None, :] + zpart  # [T, n, K, H]
            for layer in list(self.net)[1:]:
                h = layer(h)
            err = h[..., 0] - target[:, n0:n0 + chunk]  # [T, n, K]
            out -= inv * (err * err).sum(dim=1)
        return out


class TanhGaussianActor(nn.Module):
    """pi(a | s, z) = tanh(N(mu, sigma)); actions in [-1, 1], scaled to physical units by the
    ``action_scale`` / ``action_bias`` buffers only at the env boundary and in the export."""

    def __init__(self, obs_dim: int, latent_dim: int, action_dim: int,
                 hidden: tuple[int, ...], action_low: np.ndarray, action_high: np.ndarray
                 ) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim + latent_dim, hidden[:-1], hidden[-1]) if len(hidden) > 1 \
            else nn.Sequential(nn.Linear(obs_dim + latent_dim, hidden[-1]))
        self.trunk_act = nn.ReLU()
        # the trunk's last Linear is a hidden layer: reference hidden init, not the small one
        last = self.trunk[-1]
        bound = 1.0 / math.sqrt(last.in_features)
        nn.init.uniform_(last.weight, -bound, bound)
        nn.init.constant_(last.bias, 0.1)
        self.mean_head = nn.Linear(hidden[-1], action_dim)
        self.log_std_head = nn.Linear(hidden[-1], action_dim)
        for head in (self.mean_head, self.log_std_head):
            nn.init.uniform_(head.weight, -1e-3, 1e-3)
            nn.init.uniform_(head.bias, -1e-3, 1e-3)
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def forward(self, obs: torch.Tensor, z: torch.Tensor, deterministic: bool = False,
                with_log_prob: bool = True, generator: torch.Generator | None = None
                ) -> PolicyOutput:
        h = self.trunk_act(self.trunk(torch.cat([obs, z], dim=-1)))
        mean = self.mean_head(h)
        log_std = torch.clamp(self.log_std_head(h), LOG_STD_MIN, LOG_STD_MAX)
        if deterministic:
            pre = mean
            eps = torch.zeros_like(mean)
        else:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device,
                              dtype=mean.dtype)
            pre = mean + log_std.exp() * eps
        action = torch.tanh(pre)
        log_prob = None
        if with_log_prob:
            # log N(pre; mean, std) - log|d tanh/d pre|, with the stable form of log(1-tanh^2)
            log_prob = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
            log_prob = log_prob - (2.0 * (math.log(2.0) - pre - F.softplus(-2.0 * pre))).sum(-1)
        return PolicyOutput(action, log_prob, mean, log_std)

    def to_physical(self, action: torch.Tensor) -> torch.Tensor:
        return action * self.action_scale + self.action_bias


class PearlNetworks(nn.Module):
    """Every network of one PEARL agent, so one ``state_dict`` holds the whole model.

    reference variant: qf (2 members), vf, target_vf. modern variant: qf, target_qf, log_alpha.
    """

    def __init__(self, cfg: PearlConfig, spec: EnvSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = spec
        o, a = spec.obs_dim, spec.action_dim
        self.layout = context_layout(spec, cfg.use_next_obs_in_context)
        self.obs_norm = ObsNormalizer(o)
        if cfg.inference == "pooled":
            self.encoder: nn.Module = PooledEncoder(
                self.layout.width, cfg.encoder_hidden_sizes, cfg.feature_dim,
                cfg.head_hidden_sizes, cfg.latent_dim, cfg.var_floor, belief_window(cfg),
                cfg.belief_head, cfg.belief_rank)
            self.decoder = RewardDecoder(o, a, cfg.latent_dim, cfg.decoder_hidden_sizes)
            if cfg.refinement == "particles":
                self.context_decoder = ContextRewardDecoder(self.layout, cfg.latent_dim,
                                                            cfg.decoder_hidden_sizes)
                # the hypotheses of z; the trainer draws them from the family's task
                # distribution (a buffer: checkpoints keep them with the weights)
                self.register_buffer("particles", torch.randn(cfg.num_particles,
                                                              cfg.latent_dim))
        else:  # pog; "privileged" keeps an (unused) encoder so checkpoints have one layout
            self.encoder = ContextEncoder(self.layout.width, cfg.encoder_hidden_sizes,
                                          cfg.latent_dim, cfg.use_information_bottleneck,
                                          cfg.var_floor)
        L = policy_latent_dim(cfg.latent_dim, cfg.policy_input)
        self.actor = TanhGaussianActor(o, L, a, cfg.hidden_sizes, spec.action_low,
                                       spec.action_high)
        self.qf = EnsembleMLP(2, o + a + L, cfg.hidden_sizes, 1)
        if cfg.sac_variant == "reference":
            self.vf = EnsembleMLP(1, o + L, cfg.hidden_sizes, 1)
            self.target_vf = EnsembleMLP(1, o + L, cfg.hidden_sizes, 1)
            self.target_vf.load_state_dict(self.vf.state_dict())
            self.target_vf.requires_grad_(False)
        else:
            self.target_qf = EnsembleMLP(2, o + a + L, cfg.hidden_sizes, 1)
            self.target_qf.load_state_dict(self.qf.state_dict())
            self.target_qf.requires_grad_(False)
            self.log_alpha = nn.Parameter(torch.zeros(()))

    def normalize_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Raw context rows (replay layout: raw obs, actions in [-1, 1], context reward) ->
        encoder input, the observation fields through the ObsNormalizer."""
        sl = self.layout.slices
        parts = [self.obs_norm(rows[..., sl["obs"]]), rows[..., sl["action"]],
                 rows[..., sl["reward"]]]
        if "next_obs" in sl:
            parts.append(self.obs_norm(rows[..., sl["next_obs"]]))
        return torch.cat(parts, dim=-1)


def belief_window(cfg: PearlConfig) -> int:
    """Transitions the "pooled" online belief keeps (its step state's ring size)."""
    return cfg.belief_window if cfg.belief_window is not None else cfg.embedding_batch_size
