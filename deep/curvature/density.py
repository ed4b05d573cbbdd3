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
The probes' Lanczos runs advance together, each step's products taken in one ``matmat`` (batched by the
operators that can, :meth:`~deep.curvature.operators.CurvatureOperator.block_size`).
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
from .lanczos import Convergence, KrylovBasis
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

    def __repr__(self) -> str:
        probes, steps = self.nodes.shape
        return (f"SpectralDensity({probes} probes x {steps} nodes, grid [{self.grid[0]:.4g}, {self.grid[-1]:.4g}] "
                f"({len(self.grid)} points), sigma={self.sigma:.4g}, hvps={self.hvps})")

    def moment(self, p: int) -> float:
        """The quadrature estimate of (1/n) tr(A^p), from the nodes and weights (not the smoothed curve)."""
        return float(np.mean(np.sum(self.weights * self.nodes ** p, axis=1)))


def lanczos_quadrature(op: CurvatureOperator, probe: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Gauss quadrature (nodes, weights) of the spectral measure of ``probe`` under A, ``steps`` products.

    Nodes are ascending float64 Ritz values; weights (y_j . v)^2 with v = probe / ||probe|| sum to 1.
    """
    op = as_operator(op)
    steps = checks.integer("steps", steps, low=1, high=op.n)
    nodes, weights = lanczos_quadratures(op, probe.reshape(-1, 1), steps)
    return nodes[0], weights[0]


def lanczos_quadratures(op: CurvatureOperator, probes: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """:func:`lanczos_quadrature` of every column of ``probes`` (n, p): (p, steps) nodes and weights.

    The p Lanczos runs (:class:`deep.curvature.lanczos.KrylovBasis`, full reorthogonalisation, a random
    restart if a Krylov space becomes invariant) advance in step, so that each step's p products are one
    ``matmat``: an operator that batches its products takes them together.
    """
    n, p = probes.shape
    V = probes.to(device=op.device, dtype=op.dtype)
    V = V / torch.linalg.vector_norm(V, dim=0, keepdim=True)
    bases = [KrylovBasis(n, steps, op.device, op.dtype) for _ in range(p)]
    tests = [Convergence(1, 1e-300, "largest") for _ in range(p)]
    generators = [torch.Generator().manual_seed(0) for _ in range(p)]
    current, finite = V.clone(), [True] * p
    for j in range(steps):
        for i, basis in enumerate(bases):
            basis.append(current[:, i])
        W = op.matmat(current)
        for i, basis in enumerate(bases):
            alpha, r = basis.extend(current[:, i], W[:, i])
            beta = float(torch.linalg.vector_norm(r))
            finite[i] = finite[i] and math.isfinite(alpha) and math.isfinite(beta)
            if not finite[i]:  # this probe is done (its quadrature will be nan); zeros cost nothing to track
                current[:, i] = 0
            elif j + 1 < steps:
                theta, s = basis.ritz()
                invariant = tests[i].residuals(theta, s, alpha, beta)[2]
                current[:, i] = basis.restart(generators[i]) if invariant else basis.continue_with(beta, r)
    nodes, weights = [], []
    for i, basis in enumerate(bases):
        if not finite[i]:  # e.g. a diverged network: this probe's quadrature is nan
            nodes.append(torch.full((steps,), math.nan, dtype=torch.float64))
            weights.append(torch.full((steps,), math.nan, dtype=torch.float64))
            continue
        theta, s = basis.ritz()
        w = (basis.vectors(s, torch.arange(steps)).T.double() @ V[:, i].double()) ** 2
        nodes.append(theta)
        weights.append(w.cpu())
    return torch.stack(nodes), torch.stack(weights)


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
    Z = torch.stack([(2 * torch.randint(0, 2, (op.n,), generator=generator, dtype=torch.int8) - 1).to(torch.float64)
                     for _ in range(probes)], dim=1)
    nodes_t, weights_t = lanczos_quadratures(op, Z, steps)
    nodes_a, weights_a = nodes_t.numpy(), weights_t.numpy()
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
