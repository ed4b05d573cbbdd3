"""Spectral density of a curvature matrix by stochastic Lanczos quadrature (SLQ).

The spectral density of a symmetric n x n operator A with eigenpairs (lambda_i, u_i) is
phi(t) = (1/n) sum_i delta(t - lambda_i).  For a probe v with E[v v^T] = I / n (a normalised
Rademacher vector), the probe's spectral measure mu_v = sum_i (u_i . v)^2 delta(t - lambda_i) has
E[mu_v] = phi.  m Lanczos steps from v give the Gauss quadrature of mu_v: nodes theta_j (the Ritz
values, eigenvalues of T_m) and weights w_j = (e_1 . s_j)^2 = (y_j . v)^2 (sum 1), exact for every
polynomial of degree < 2m:  sum_j w_j theta_j^p = v^T A^p v.

Averaged over ``probes`` probes and smoothed with a Gaussian of width sigma,

    density(t) = (1/probes) sum_probes sum_j w_j N(t; theta_j, sigma^2),

which integrates to 1 (renormalised on the grid, which spans the nodes +- 5 sigma).  This is the
method of Ghorbani, Krishnan and Xiao (2019), PyHessian's ``density``, with full reorthogonalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aeos_base import checks

from .build import curvature_operator
from .inputs import LossFn
from .lanczos import lanczos
from .operators import CurvatureOperator, as_operator
from .params import ParamSelection


@dataclass(frozen=True)
class SpectralDensity:
    """An SLQ estimate of the spectral density.

    grid: (G,) eigenvalue axis (units of A's eigenvalues).  density: (G,) values of the smoothed density
    on the grid (1 / units of the eigenvalues), trapezoid integral 1.  nodes, weights: (probes, m) Ritz
    values and quadrature weights of each probe (each row of weights sums to 1; a probe whose Krylov
    space became invariant before m steps has zero weights in the extra columns).  sigma: the Gaussian
    width.  hvps: products used.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    hvps: int

    def moment(self, p: int) -> float:
        """The quadrature estimate of (1/n) tr(A^p), from the nodes and weights (not the smoothed curve)."""
        return float(np.mean(np.sum(self.weights * self.nodes ** p, axis=1)))


def lanczos_quadrature(op: CurvatureOperator, probe: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Gauss quadrature (nodes, weights) of the spectral measure of ``probe`` under A, ``steps`` products.

    Nodes are ascending float64 Ritz values; weights (y_j . v)^2 with v = probe / ||probe|| sum to 1.
    """
    op = as_operator(op)
    steps = checks.integer("steps", steps, low=1, high=op.n)
    v = probe.to(device=op.device, dtype=op.dtype)
    v = v / torch.linalg.vector_norm(v)
    res = lanczos(op, k=steps, tol=1e-300, max_iter=steps, min_iter=steps, init=v, warn=False)
    weights = (res.eigenvectors.T.double() @ v.double()) ** 2
    order = torch.argsort(res.eigenvalues)
    return res.eigenvalues[order], weights.cpu()[order]


def density_estimate(op: CurvatureOperator, *, steps: int = 60, probes: int = 4, sigma: float | None = None,
                     grid_points: int = 1000, seed: int = 0) -> SpectralDensity:
    """SLQ density of a symmetric operator (module docstring): ``probes`` Rademacher probes from ``seed``,
    ``steps`` Lanczos steps each (capped at n), Gaussian width ``sigma`` (None: 1% of the node range)."""
    op = as_operator(op)
    steps = min(checks.integer("steps", steps, low=1), op.n)
    probes = checks.integer("probes", probes, low=1)
    grid_points = checks.integer("grid_points", grid_points, low=2)
    generator = torch.Generator().manual_seed(int(seed))
    start = op.matvecs
    nodes, weights = [], []
    for _ in range(probes):
        z = (2 * torch.randint(0, 2, (op.n,), generator=generator, dtype=torch.int8) - 1).to(torch.float64)
        theta, w = lanczos_quadrature(op, z, steps)
        nodes.append(theta.numpy())
        weights.append(w.numpy())
    nodes_a, weights_a = np.array(nodes), np.array(weights)
    span = float(nodes_a.max() - nodes_a.min())
    if sigma is None:
        sigma = 0.01 * span if span > 0 else 1e-3 * max(abs(float(nodes_a.max())), 1.0)
    sigma = checks.real("sigma", sigma, low=0.0, low_inclusive=False)
    grid = np.linspace(nodes_a.min() - 5 * sigma, nodes_a.max() + 5 * sigma, grid_points)
    kernel = np.exp(-0.5 * ((grid[:, None] - nodes_a.reshape(-1)[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = kernel @ weights_a.reshape(-1) / probes
    density = density / float(np.sum((density[1:] + density[:-1]) * np.diff(grid)) / 2)  # trapezoid rule
    return SpectralDensity(grid, density, nodes_a, weights_a, float(sigma), op.matvecs - start)


def spectral_density(model: nn.Module, loss_fn: LossFn, data: Any, optimizer: torch.optim.Optimizer | None = None,
                     *, steps: int = 60, probes: int = 4, sigma: float | None = None, grid_points: int = 1000,
                     seed: int = 0, params: ParamSelection = None, curvature: str = "hessian",
                     strategy: str = "auto") -> SpectralDensity:
    """Spectral density of H of the full-batch loss, or of P^-1/2 H P^-1/2 with P from ``optimizer``.

    Args:
        model, loss_fn, data: the full-batch loss (:mod:`deep.curvature.inputs`); optimizer: None for H.
        steps: Lanczos steps per probe (quadrature nodes; PyHessian's ``iter``). probes: number of
            Rademacher probes (PyHessian's ``n_v``). sigma: Gaussian smoothing width in eigenvalue units
            (None: 1% of the range of the nodes). grid_points: size of the grid. seed: the probes' seed.
        params: parameter block (:mod:`deep.curvature.params`). curvature: one of :data:`deep.curvature.CURVATURES`.
        strategy: the HVP strategy (:mod:`deep.curvature.hessian`).

    Returns:
        :class:`SpectralDensity` (grid, density integrating to 1, nodes, weights); costs probes * steps products.
    """
    op = curvature_operator(model, loss_fn, data, optimizer, curvature=curvature, strategy=strategy, params=params)
    return density_estimate(op, steps=steps, probes=probes, sigma=sigma, grid_points=grid_points, seed=seed)
