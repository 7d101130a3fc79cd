"""Online belief over z: a product of Gaussians kept as running sums, O(latent) per step.

Training combines per-transition factors N(mu_i, var_i) with ``core.posterior`` as
``precision = sum 1/var_i``, ``mean = var * sum mu_i/var_i`` (convention ``pog-no-prior``:
the N(0, I) prior is the belief only while the context is empty). Both sums are associative,
so the robot keeps them running instead of re-encoding a growing history.

Unbounded, the precision grows by about one factor per 20 Hz tick and the posterior collapses
within minutes (oyster's known overconfidence; pearl-oyster.md item 12). The context is
therefore always bounded, by either or both of:

- a **window** of the newest ``window`` factors (a ring buffer of their precisions and
  precision-weighted means; the factor leaving the window is subtracted), and
- a **forgetting factor** ``lam`` in (0, 1]: each step the sums are multiplied by ``lam``
  before the new factor is added, an effective context of ``1 / (1 - lam)`` transitions.

Subtracting from float sums drifts over hours, so with a window the sums are recomputed
exactly from the ring every ``window`` additions (amortised O(latent) per step).
"""

from __future__ import annotations

import numpy as np


class OnlineBelief:
    """Running product-of-Gaussians posterior with a bounded context (see module doc).

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
        self._old = np.zeros((2, latent_dim))  # scratch: the weighted factor leaving
        self._mean = np.zeros(latent_dim)
        self._var = np.ones(latent_dim)
        self._tmp = np.empty(latent_dim)
        self._count = 0  # factors currently in the context (<= window)
        if window is not None:
            self._ring = np.zeros((window, 2, latent_dim))
            self._head = 0  # slot the next factor goes to (= the oldest when full)
            self._since_resum = 0
            # weight of a factor that is k steps old is lam**k; the one leaving has lam**W
            self._lam_w = self.forgetting ** window
            self._age_weights = self.forgetting ** np.arange(window, dtype=np.float64)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every factor: the belief is the prior again (a task change, a new model)."""
        self._sums[:] = 0.0
        self._count = 0
        if self.window is not None:
            self._ring[:] = 0.0
            self._head = 0
            self._since_resum = 0
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
        if self.window is None:
            sums += nat
            self._count += 1
        else:
            h = self._head
            slot = self._ring[h]
            if self._count == self.window:  # the oldest factor leaves
                if self._decay:
                    np.multiply(slot, self._lam_w, out=self._old)
                    sums -= self._old
                else:
                    sums -= slot
            else:
                self._count += 1
            slot[...] = nat
            sums += nat
            h += 1
            self._head = 0 if h == self.window else h
            self._since_resum += 1
            if self._since_resum >= self.window:
                self._resum()
        self._refresh()

    def _resum(self) -> None:
        """Recompute the sums exactly from the ring (removes subtraction drift)."""
        n, W = self._count, self.window
        assert W is not None
        # slot of the factor that is k steps old: (head - 1 - k) mod W
        idx = (self._head - 1 - np.arange(n)) % W
        w = self._age_weights[:n, None, None]
        self._sums[:] = (w * self._ring[idx]).sum(axis=0)
        self._since_resum = 0

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
