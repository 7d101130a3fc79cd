"""Task inference, one owner: the context row layout and the online belief step.

Everything that turns the robot's transitions into a belief over the task variable z goes
through this module, on every path that does it: the replay buffer and the trainer's context
batches, the trainer's evaluation "as on the robot", the exporter's graphs and parity checks,
and the robot runtime. It is numpy only (the robot's computer has no torch); the networks that
produce the per-transition evidence live in ``core/networks.py``.

**Context rows** (:class:`ContextLayout`): one row per transition, fields in this order:
``obs`` (raw, physical units), ``action`` (normalized to [-1, 1] in the replay buffer; physical
units at the exported graph's input, which normalizes inside), ``reward`` (the *context*
reward: the family's ``context_reward_key`` value when it has one), and, when the model uses
it, ``next_obs`` (raw). Observations are normalized by the model's ``ObsNormalizer`` inside the
networks and graphs, so a row never carries normalized observations. The bundle contract
serializes :meth:`ContextLayout.to_contract` and the runtime rebuilds the layout from it.

**Belief steps**, one per inference mode (``PearlConfig.inference``):

- ``pog`` (PEARL): :class:`OnlineBelief`, the product of per-transition Gaussian factors kept as
  running natural-parameter sums over a bounded window and/or with forgetting.
- ``pooled`` (beyond PEARL): :class:`StepBelief`, a fixed-size state (a ring of the newest
  per-transition features and their count) advanced by one *step function* per transition;
  the step is one torch module (``networks.PooledEncoder.step``) that is exported as the
  bundle's step graph, so the trainer's online evaluation and the robot run the same math.

- ``pooled`` with the ``particles`` refinement: :class:`ParticleBelief`, log-weights over a
  fixed set of hypotheses of z, each transition adding its log-likelihood under every
  particle (one *particle step*: ``networks.ContextRewardDecoder.log_likelihood``, exported
  as the bundle's particle step graph), over a bounded window and/or with forgetting.

Unbounded, a belief over hours of 20 Hz data collapses (oyster's known overconfidence;
pearl-oyster.md item 12), so every step has a bounded context.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

InferenceMode = Literal["pog", "pooled", "privileged"]
INFERENCE_MODES: tuple[str, ...] = ("pog", "pooled", "privileged")
"""``pog``: PEARL's product of per-transition Gaussians (the faithful baseline).
``pooled``: a permutation-invariant set encoder (mean and max pooling of per-transition
features) with a Gaussian belief head, trained by task-parameter regression and reward
reconstruction. ``privileged``: the policy is given the true task parameters (a benchmark
ceiling, never exported)."""

PolicyInput = Literal["sample", "belief"]
POLICY_INPUTS: tuple[str, ...] = ("sample", "belief")
"""What the actor and critics see of the belief: ``sample``: z drawn from it (PEARL; posterior
sampling explores); ``belief``: its mean and standard deviation, concatenated (2 x latent)."""


# ---------------------------------------------------------------------------------------------
# context rows


class ContextField(NamedTuple):
    """One field of a context row."""

    name: str
    """``obs``, ``action``, ``reward`` or ``next_obs``."""
    size: int
    """Entries in the row."""
    units: str
    """What the entries are, as the contract tells a reader."""


@dataclass(frozen=True)
class ContextLayout:
    """The context row layout of one model: which fields, in which order (module doc)."""

    obs_dim: int
    """Observation size."""
    action_dim: int
    """Action size."""
    use_next_obs: bool
    """Rows end with the next observation (needed when the dynamics vary)."""

    def __post_init__(self) -> None:
        if self.obs_dim <= 0 or self.action_dim <= 0:
            raise ValueError(f"ContextLayout needs obs_dim, action_dim > 0, got "
                             f"{self.obs_dim}, {self.action_dim}")

    @property
    def fields(self) -> tuple[ContextField, ...]:
        f = [ContextField("obs", self.obs_dim, "observation, physical units"),
             ContextField("action", self.action_dim,
                          "command; physical units at the graph input, [-1, 1] in replay"),
             ContextField("reward", 1, "context reward")]
        if self.use_next_obs:
            f.append(ContextField("next_obs", self.obs_dim, "next observation, physical units"))
        return tuple(f)

    @property
    def width(self) -> int:
        """Entries in one row."""
        return self.obs_dim * (2 if self.use_next_obs else 1) + self.action_dim + 1

    @property
    def slices(self) -> dict[str, slice]:
        """Field name -> its slice of a row."""
        out: dict[str, slice] = {}
        start = 0
        for f in self.fields:
            out[f.name] = slice(start, start + f.size)
            start += f.size
        return out

    def rows(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
             next_obs: np.ndarray | None = None, dtype: Any = np.float32) -> np.ndarray:
        """Context rows from per-field arrays with a common leading shape [..., dim]
        (rewards may be [...] or [..., 1])."""
        obs = np.asarray(obs)
        lead = obs.shape[:-1]
        parts = [obs, np.asarray(actions), np.asarray(rewards).reshape(*lead, 1)]
        if self.use_next_obs:
            if next_obs is None:
                raise ValueError("this model's context rows need next observations")
            parts.append(np.asarray(next_obs))
        return np.concatenate([np.asarray(p, dtype=dtype).reshape(*lead, -1) for p in parts],
                              axis=-1)

    def scale_vectors(self, obs_offset: np.ndarray, obs_scale: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) over a whole row: the observation normalizer on the obs fields,
        identity on the action (already in [-1, 1] in replay) and the reward."""
        ident_o, ident_s = np.zeros(self.action_dim + 1), np.ones(self.action_dim + 1)
        offs = [np.asarray(obs_offset, dtype=np.float64), ident_o]
        scales = [np.asarray(obs_scale, dtype=np.float64), ident_s]
        if self.use_next_obs:
            offs.append(np.asarray(obs_offset, dtype=np.float64))
            scales.append(np.asarray(obs_scale, dtype=np.float64))
        return np.concatenate(offs), np.concatenate(scales)

    def to_contract(self) -> list[dict[str, Any]]:
        """The ``context.fields`` list of a bundle contract."""
        return [{"name": f.name, "size": f.size, "units": f.units} for f in self.fields]

    @classmethod
    def from_fields(cls, fields: Sequence[Mapping[str, Any]] | Sequence[ContextField]
                    ) -> ContextLayout:
        """Rebuild a layout from a contract's field list; ValueError if it is not one."""
        names = [f["name"] if isinstance(f, Mapping) else f.name for f in fields]
        sizes = [int(f["size"] if isinstance(f, Mapping) else f.size) for f in fields]
        if names not in (["obs", "action", "reward"], ["obs", "action", "reward", "next_obs"]):
            raise ValueError(f"context fields must be obs, action, reward[, next_obs] in this "
                             f"order, got {names}")
        if sizes[2] != 1 or (len(sizes) == 4 and sizes[3] != sizes[0]):
            raise ValueError(f"context field sizes {dict(zip(names, sizes))} are not a valid "
                             f"layout (reward 1, next_obs as obs)")
        return cls(sizes[0], sizes[1], len(names) == 4)


# ---------------------------------------------------------------------------------------------
# pog: the product of Gaussians, running sums


class ContextRing:
    """The bounded context both online beliefs keep: the newest ``window`` per-row
    contributions (a pog factor's natural parameters, a row's per-particle log-likelihoods)
    in a ring, with their forgetting weights, so the contribution leaving can be subtracted
    from a running sum and the sum recomputed exactly every ``window`` rows (float drift
    cannot build up over hours). One owner for the ring arithmetic; allocation-free on the
    control path (the leaving contribution is written into a scratch array)."""

    def __init__(self, window: int, shape: tuple[int, ...], forgetting: float,
                 dtype: Any = np.float64) -> None:
        self.window = window
        self.ring = np.zeros((window, *shape), dtype=dtype)
        self.leaving = np.zeros(shape)  # scratch: the weighted contribution leaving
        # a contribution k steps old weighs lam**k; the one leaving weighs lam**W
        self._lam_w = forgetting ** window
        self._decay = forgetting < 1.0
        self._age_weights = forgetting ** np.arange(window, dtype=np.float64)
        self.clear()

    def clear(self) -> None:
        self.ring[:] = 0
        self.head = 0  # slot the next row goes to (= the oldest when full)
        self.count = 0
        self._since_resum = 0

    def push(self, value: np.ndarray) -> np.ndarray | None:
        """Store ``value`` as the newest row; returns the contribution that left (weighted
        by its age, in :attr:`leaving`) when the ring was full, else None."""
        slot = self.ring[self.head]
        out = None
        if self.count == self.window:
            if self._decay:
                np.multiply(slot, self._lam_w, out=self.leaving)
            else:
                self.leaving[...] = slot
            out = self.leaving
        else:
            self.count += 1
        slot[...] = value
        self.head = 0 if self.head + 1 == self.window else self.head + 1
        self._since_resum += 1
        return out

    @property
    def resum_due(self) -> bool:
        """True once per ``window`` rows: time to recompute the running sum exactly."""
        return self._since_resum >= self.window

    def weighted_sum(self, out: np.ndarray) -> None:
        """``out`` = the exact age-weighted sum of the rows in the ring."""
        idx = (self.head - 1 - np.arange(self.count)) % self.window  # k steps old
        w = self._age_weights[:self.count].reshape(-1, *([1] * (self.ring.ndim - 1)))
        out[...] = (w * self.ring[idx].astype(np.float64)).sum(axis=0)
        self._since_resum = 0


class OnlineBelief:
    """Running product-of-Gaussians posterior with a bounded context.

    Training combines per-transition factors N(mu_i, var_i) as ``precision = sum 1/var_i``,
    ``mean = var * sum mu_i/var_i`` (convention ``pog-no-prior``: the N(0, I) prior is the
    belief only while the context is empty). Both sums are associative, so the robot keeps them
    running instead of re-encoding a growing history. The context is bounded by either or both
    of a **window** of the newest ``window`` factors (a ring of their natural parameters; the
    factor leaving is subtracted, and the sums are recomputed exactly from the ring every
    ``window`` additions so float drift cannot build up over hours) and a **forgetting
    factor** ``lam`` in (0, 1] (sums multiplied by ``lam`` before each new factor: an effective
    context of ``1 / (1 - lam)`` transitions).

    Each factor is kept in natural parameters ``[precision, precision * mean]`` (a [2, latent]
    array), so adding, decaying and removing one are a handful of in-place vector operations.
    Arrays returned by :attr:`mean` and :attr:`var` are owned by this object and updated in
    place by :meth:`add`; copy them to keep a value.
    """

    def __init__(self, latent_dim: int, window: int | None, forgetting: float = 1.0,
                 include_prior: bool = False) -> None:
        if latent_dim <= 0:
            raise ValueError(f"latent_dim must be > 0, got {latent_dim}")
        if window is not None and window <= 0:
            raise ValueError(f"window must be > 0 or None, got {window}")
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        if window is None and forgetting >= 1.0:
            raise ValueError("an unbounded context collapses the posterior: set a window, a "
                             "forgetting factor < 1, or both")
        self.latent_dim = latent_dim
        self.window = window
        self.forgetting = float(forgetting)
        self._decay = self.forgetting < 1.0
        self.include_prior = include_prior
        self._sums = np.zeros((2, latent_dim))  # [sum w/var, sum w*mu/var]
        self._nat = np.zeros((2, latent_dim))  # scratch: the factor being added
        self._mean = np.zeros(latent_dim)
        self._var = np.ones(latent_dim)
        self._tmp = np.empty(latent_dim)
        self._count = 0  # factors currently in the context (<= window)
        self._ring = ContextRing(window, (2, latent_dim), self.forgetting) \
            if window is not None else None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every factor: the belief is the prior again (a task change, a new model)."""
        self._sums[:] = 0.0
        self._count = 0
        if self._ring is not None:
            self._ring.clear()
        self._refresh()

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean [latent] (live view)."""
        return self._mean

    @property
    def var(self) -> np.ndarray:
        """Posterior variance [latent] (live view)."""
        return self._var

    @property
    def count(self) -> int:
        """Transitions in the context (window contents, or all added under forgetting only)."""
        return self._count

    @property
    def effective_count(self) -> float:
        """Sum of the factors' weights: ``count`` without forgetting, less with it."""
        lam = self.forgetting
        n = self._count
        if lam >= 1.0:
            return float(n)
        return float((1.0 - lam ** n) / (1.0 - lam))

    @property
    def precision_sum(self) -> np.ndarray:
        """sum_i w_i / var_i (read-only use)."""
        return self._sums[0]

    # ------------------------------------------------------------------ update
    def add(self, mu: np.ndarray, var: np.ndarray) -> None:
        """Multiply one factor N(mu, var) into the belief. ``var`` must be finite and > 0
        (the caller checks; the encoder clamps it at the contract's var_floor)."""
        nat = self._nat
        np.reciprocal(var, out=nat[0])
        np.multiply(nat[0], mu, out=nat[1])
        self.add_natural(nat)

    def add_natural(self, nat: np.ndarray) -> None:
        """Multiply in one factor given as ``[1/var, mu/var]`` ([2, latent], finite, first
        row > 0). The control path computes these in place and calls this directly."""
        sums = self._sums
        if self._decay:
            sums *= self.forgetting
        ring = self._ring
        if ring is None:
            sums += nat
            self._count += 1
        else:
            leaving = ring.push(nat)  # the oldest factor leaves once the window is full
            if leaving is not None:
                sums -= leaving
            sums += nat
            self._count = ring.count
            if ring.resum_due:  # exactly from the ring: no subtraction drift
                ring.weighted_sum(self._sums)
        self._refresh()

    def _refresh(self) -> None:
        if self._count == 0 and not self.include_prior:
            self._mean[:] = 0.0  # empty context: the prior N(0, I)
            self._var[:] = 1.0
            return
        if self.include_prior:
            np.add(self._sums[0], 1.0, out=self._tmp)
            np.reciprocal(self._tmp, out=self._var)
        else:
            np.reciprocal(self._sums[0], out=self._var)
        np.multiply(self._var, self._sums[1], out=self._mean)


# ---------------------------------------------------------------------------------------------
# pooled: a fixed-size state advanced by one step function


class StepOutput(NamedTuple):
    """What one belief step returns (arrays [batch, ...])."""

    ring: np.ndarray
    """The newest per-transition features, oldest first [B, window, features]."""
    count: np.ndarray
    """Transitions seen, clipped to the window [B, 1]."""
    mean: np.ndarray
    """Belief mean over z [B, latent]."""
    var: np.ndarray
    """Belief variance [B, latent]."""


StepFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], StepOutput]
"""(rows [B, width], ring [B, W, H], count [B, 1]) -> StepOutput. The runtime passes the
bundle's step graph (onnxruntime); the trainer's evaluation passes the torch module it was
exported from."""


class StepBelief:
    """A belief whose whole state is (ring of features, count), advanced by a step function.

    The state is a fixed-size array, so the per-tick cost does not grow with time and the
    context is bounded by construction (the ring keeps the newest ``window`` features).
    ``mean``/``var`` are live views like :class:`OnlineBelief`'s; ``batch`` > 1 runs several
    tasks' beliefs in lockstep (the trainer's evaluation).
    """

    def __init__(self, step: StepFunction, latent_dim: int, window: int, features: int,
                 batch: int = 1) -> None:
        if latent_dim <= 0 or window <= 0 or features <= 0 or batch <= 0:
            raise ValueError(f"StepBelief needs positive sizes, got latent {latent_dim}, "
                             f"window {window}, features {features}, batch {batch}")
        self.step_fn = step
        self.latent_dim = latent_dim
        self.window = window
        self.features = features
        self.batch = batch
        self.ring = np.zeros((batch, window, features), dtype=np.float32)
        self.count_arr = np.zeros((batch, 1), dtype=np.float32)
        self._mean = np.zeros((batch, latent_dim))
        self._var = np.ones((batch, latent_dim))
        self._count = np.zeros(batch, dtype=np.int64)

    def reset(self, rows: np.ndarray | None = None) -> None:
        """Forget the context (all of the batch, or where the bool mask ``rows`` is True)."""
        sel = slice(None) if rows is None else np.asarray(rows, dtype=bool)
        self.ring[sel] = 0.0
        self.count_arr[sel] = 0.0
        self._mean[sel] = 0.0
        self._var[sel] = 1.0
        self._count[sel] = 0

    @property
    def mean(self) -> np.ndarray:
        """Belief mean [latent] (batch 1) or [batch, latent] (live view)."""
        return self._mean[0] if self.batch == 1 else self._mean

    @property
    def var(self) -> np.ndarray:
        """Belief variance, same shapes as :attr:`mean` (live view)."""
        return self._var[0] if self.batch == 1 else self._var

    @property
    def count(self) -> int:
        """Transitions in the context (batch 1; the first row's otherwise)."""
        return int(self._count[0])

    @property
    def counts(self) -> np.ndarray:
        """Transitions in each batch row's context."""
        return self._count

    def add_rows(self, rows: np.ndarray, live: np.ndarray | None = None) -> None:
        """Advance the belief by one transition per batch row ([B, width] raw context rows,
        physical units as the step graph takes them). Rows where ``live`` is False keep their
        state (a finished episode in a lockstep batch). Raises ValueError when the step
        returns a non-finite or non-positive belief (the state is then left unchanged): a
        non-finite feature would reach the pooled mean, so checking the belief covers it."""
        out = self.step_fn(np.asarray(rows, dtype=np.float32).reshape(self.batch, -1),
                           self.ring, self.count_arr)
        if not (np.isfinite(out.mean).all() and np.isfinite(out.var).all()
                and (out.var > 0).all()):
            raise ValueError("belief step produced non-finite values")
        if live is None:  # the robot's path: copies into owned arrays, no temporaries
            np.copyto(self.ring, out.ring)
            np.copyto(self.count_arr, out.count)
            np.copyto(self._mean, out.mean)
            np.copyto(self._var, out.var)
            if self._count[0] < self.window or self.batch > 1:
                np.minimum(self._count + 1, self.window, out=self._count)
            return
        sel = np.asarray(live, dtype=bool)
        self.ring[sel] = out.ring[sel]
        self.count_arr[sel] = out.count[sel]
        self._mean[sel] = out.mean[sel]
        self._var[sel] = out.var[sel]
        self._count[sel] = np.minimum(self._count[sel] + 1, self.window)


# ---------------------------------------------------------------------------------------------
# particles: log-weights over fixed hypotheses of z


class ParticleStepOutput(NamedTuple):
    """What one particle step returns (arrays [batch, particles])."""

    log_w: np.ndarray
    """The log-weights it was given plus ``loglik``."""
    loglik: np.ndarray
    """Log-likelihood of the row under each particle."""


ParticleStepFunction = Callable[[np.ndarray, np.ndarray], ParticleStepOutput]
"""(rows [1, width], log_w [1, P]) -> ParticleStepOutput. The runtime passes the bundle's
particle step graph (onnxruntime); a test may pass the torch decoder it was exported from."""


class ParticleBelief:
    """A weighted set of ``P`` fixed hypotheses of z (the "particles" refinement).

    Each transition adds its log-likelihood under every particle to the particle's
    log-weight (the trainer's ``PearlAgent.particle_log_likelihood``, summed over the
    context); uniform weights are the prior. The state is one log-weight per particle, so a
    step is O(P) besides the step function. The context is bounded like
    :class:`OnlineBelief`'s, by a **window** of the newest ``window`` rows (a ring of their
    [P] log-likelihoods: the one leaving is subtracted, and the sum is recomputed exactly from
    the ring every ``window`` additions) and/or a **forgetting** factor ``lam`` (log-weights
    multiplied by ``lam`` before each new row).

    Numerics: the log-weights are renormalized after every row (minus their log-sum-exp), so
    they stay bounded above by 0 however long the robot runs; a step whose output is not
    finite everywhere raises ValueError and leaves the state as it was (a row that would
    poison one weight is never added).

    :attr:`feed` [1, P] float32 is what the next step must be given as its log-weights (the
    current ones, decayed by ``lam``): the runtime binds it as the step graph's input.
    ``mean``/``var`` (the weighted mean and variance of the particles per latent dim) and
    :attr:`effective_sample_size` summarize the belief for the node's topics; like the other
    beliefs' they are live views.
    """

    def __init__(self, step: ParticleStepFunction, particles: np.ndarray,
                 window: int | None, forgetting: float = 1.0) -> None:
        parts = np.asarray(particles, dtype=np.float64)
        if parts.ndim != 2 or parts.shape[0] == 0 or parts.shape[1] == 0:
            raise ValueError(f"particles must be [P > 0, latent > 0], got {parts.shape}")
        if not np.all(np.isfinite(parts)):
            raise ValueError("particles must be finite")
        if window is not None and window <= 0:
            raise ValueError(f"window must be > 0 or None, got {window}")
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        if window is None and forgetting >= 1.0:
            raise ValueError("an unbounded context collapses the belief: set a window, a "
                             "forgetting factor < 1, or both")
        self.step_fn = step
        self.particles = parts
        self.num_particles, self.latent_dim = parts.shape
        self.window = window
        self.forgetting = float(forgetting)
        P = self.num_particles
        self._sq = parts * parts
        self.feed = np.zeros((1, P), dtype=np.float32)
        self._log_w = np.zeros(P)  # normalized: logsumexp = 0
        self._w = np.full(P, 1.0 / P)
        self._cdf = np.empty(P)
        self._tmp = np.empty(P)
        self._mean = np.zeros(self.latent_dim)
        self._var = np.ones(self.latent_dim)
        self._ess = float(P)
        self._count = 0
        self._ring = ContextRing(window, (P,), self.forgetting, np.float32) \
            if window is not None else None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the context: uniform weights (the prior)."""
        self._log_w[:] = -math.log(self.num_particles)
        self._count = 0
        if self._ring is not None:
            self._ring.clear()
        self._refresh()

    @property
    def log_weights(self) -> np.ndarray:
        """Normalized log-weights [P] (log-sum-exp 0; live view)."""
        return self._log_w

    @property
    def weights(self) -> np.ndarray:
        """Normalized weights [P] (sum 1; live view)."""
        return self._w

    @property
    def mean(self) -> np.ndarray:
        """Weighted mean of the particles [latent] (live view)."""
        return self._mean

    @property
    def var(self) -> np.ndarray:
        """Weighted variance of the particles per latent dim [latent] (live view)."""
        return self._var

    @property
    def effective_sample_size(self) -> float:
        """1 / sum(w^2): P for uniform weights, 1 when one particle holds all the weight."""
        return self._ess

    @property
    def count(self) -> int:
        """Rows in the context (window contents, or all added under forgetting only)."""
        return self._count

    # ------------------------------------------------------------------ update
    def add_rows(self, rows: np.ndarray) -> None:
        """Add one context row ([1, width], physical units as the step takes them). Raises
        ValueError when the step's output is not finite (the state is then unchanged)."""
        out = self.step_fn(np.asarray(rows, dtype=np.float32).reshape(1, -1), self.feed)
        ll = out.loglik[0]
        new = out.log_w[0]
        if not (np.isfinite(ll).all() and np.isfinite(new).all()):
            raise ValueError("particle step produced non-finite log-likelihoods")
        tmp = self._tmp
        tmp[:] = new
        ring = self._ring
        if ring is None:
            self._count += 1
        else:
            leaving = ring.push(ll)  # the oldest row leaves once the window is full
            if leaving is not None:
                tmp -= leaving
            self._count = ring.count
            if ring.resum_due:  # exactly from the ring: no subtraction drift
                ring.weighted_sum(tmp)
        np.copyto(self._log_w, tmp)
        self._refresh()

    def _refresh(self) -> None:
        """Normalize (log-sum-exp), then the weights, summary and next feed."""
        lw, w = self._log_w, self._w
        lw -= lw.max()
        np.exp(lw, out=w)
        s = w.sum()
        w /= s
        lw -= math.log(s)
        np.dot(w, self.particles, out=self._mean)
        np.dot(w, self._sq, out=self._var)
        self._var -= self._mean * self._mean
        np.maximum(self._var, 0.0, out=self._var)
        self._ess = float(1.0 / np.dot(w, w))
        if self.forgetting < 1.0:
            np.multiply(lw, self.forgetting, out=self._tmp)
            self.feed[0] = self._tmp
        else:
            self.feed[0] = lw

    # ------------------------------------------------------------------ sampling
    def sample_index(self, rng: np.random.Generator, prior: bool = False) -> int:
        """One particle drawn from the normalized weights (``prior``: from uniform weights),
        with one ``rng.random()`` draw either way (inverse CDF)."""
        u = rng.random()
        P = self.num_particles
        if prior:
            return min(int(u * P), P - 1)
        np.cumsum(self._w, out=self._cdf)
        return min(int(np.searchsorted(self._cdf, u * self._cdf[-1], side="right")), P - 1)

    def sample(self, rng: np.random.Generator, prior: bool = False) -> np.ndarray:
        """z = a particle drawn as :meth:`sample_index` draws it (a copy, [latent])."""
        return self.particles[self.sample_index(rng, prior)].copy()


def recommended_window(train_context_size: int, eval_context_steps: int) -> int:
    """The online context a product-of-Gaussians bundle recommends: as many transitions as
    the encoder saw in training or in one evaluation, whichever is more (the runtime's
    default window, and the trainer's online evaluation's)."""
    return max(int(train_context_size), int(eval_context_steps))


def policy_latent(mean: np.ndarray, var: np.ndarray, policy_input: str,
                  eps: np.ndarray | None = None) -> np.ndarray:
    """What the actor's latent input is for a belief: a sample ``mean + sqrt(var) * eps``
    (``eps`` None: the mean), or the belief itself ``[mean, sqrt(var)]``."""
    if policy_input == "belief":
        return np.concatenate([mean, np.sqrt(var)], axis=-1)
    if eps is None:
        return np.array(mean, copy=True)
    return mean + np.sqrt(var) * eps


def policy_latent_dim(latent_dim: int, policy_input: str) -> int:
    """Width of the actor's and critics' latent input."""
    return 2 * latent_dim if policy_input == "belief" else latent_dim
