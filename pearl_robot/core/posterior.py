"""Posterior math over the latent task variable z: pure functions, closed form.

Convention (the reference's, and the one the exported bundle declares in its contract as
``posterior_convention = "pog-no-prior"``): the posterior is the product of the per-transition
Gaussian factors only; the N(0, I) prior enters the KL term, not the product. With no context
the belief *is* the prior, N(0, I). ``include_prior=True`` multiplies the prior in as one more
factor (precision 1, mean 0), which keeps the variance below 1 and is what a bounded online
window may want; the runtime reads the convention from the contract so both sides agree.
"""

from __future__ import annotations

import torch

from pearl_robot.core.types import GaussianFactors, Posterior


def product_of_gaussians(factors: GaussianFactors, include_prior: bool = False) -> Posterior:
    """Product over the transition axis (-2) of diagonal Gaussians.

    precision = sum_i 1/var_i (+1 with the prior); mean = var * sum_i mean_i/var_i.
    """
    precision = torch.reciprocal(factors.var)
    prec_sum = precision.sum(dim=-2)
    weighted = (factors.mean * precision).sum(dim=-2)
    if include_prior:
        prec_sum = prec_sum + 1.0
    var = torch.reciprocal(prec_sum)
    return Posterior(mean=var * weighted, var=var)


def prior(batch_shape: tuple[int, ...], latent_dim: int, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32) -> Posterior:
    """N(0, I) with the given batch shape."""
    shape = (*batch_shape, latent_dim)
    return Posterior(torch.zeros(shape, device=device, dtype=dtype),
                     torch.ones(shape, device=device, dtype=dtype))


def kl_to_standard_normal(post: Posterior) -> torch.Tensor:
    """KL(N(mean, var) || N(0, I)) summed over the latent dims, shape [...]."""
    return 0.5 * (post.var + post.mean.pow(2) - 1.0 - torch.log(post.var)).sum(dim=-1)


def rsample(post: Posterior, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised sample z = mean + sqrt(var) * eps (gradients flow to mean and var)."""
    eps = torch.randn(post.mean.shape, generator=generator, device=post.mean.device,
                      dtype=post.mean.dtype)
    return post.mean + torch.sqrt(post.var) * eps
