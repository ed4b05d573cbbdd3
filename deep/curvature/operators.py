"""One protocol for every curvature matrix: a symmetric n x n operator known by its products v -> A v.

:class:`CurvatureOperator` is the base (curvlinops' and scipy's ``LinearOperator`` model): a subclass
defines only ``_matvec(v)`` on a flat vector of the operator's dtype and device; the base checks the
shape, casts, counts the products (``matvecs``), and provides ``A @ v`` (vector or matrix of columns),
``matmat``, :meth:`~CurvatureOperator.to_scipy` (a ``scipy.sparse.linalg.LinearOperator``) and
:meth:`~CurvatureOperator.to_dense` (n products; for small problems and tests).  Every solver of
the package (:func:`deep.curvature.lanczos.lanczos`, :func:`deep.hessian_trace`, :func:`deep.spectral_density`)
takes such an operator.

Building blocks, composed rather than re-solved:

* the Hessian strategies of :mod:`deep.curvature.hessian` and the Gauss-Newton matrix of :mod:`deep.curvature.ggn`;
* :class:`CallableOperator`: any user function v -> A v of a symmetric A;
* :class:`DiagonalOperator`: v -> d * v;  ``A + B`` a :class:`SumOperator` (e.g. H + diag(wd));
* :class:`PreconditionedOperator`: v -> P^-1/2 A P^-1/2 v for a diagonal P > 0, whose eigenvalues are
  those of P^-1 A (S_P = lambda_max(P^-1/2 H P^-1/2)); :class:`BlockPreconditionedOperator` the same for
  any P that applies P^-1/2 block by block (Muon, Shampoo, SOAP, a user's own:
  :mod:`deep.curvature.block_preconditioners`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from aeos_base import checks


class CurvatureOperator:
    """A symmetric n x n matrix A on flat vectors (subclasses implement ``_matvec``).

    Attributes: ``n`` (dimension), ``dtype``, ``device``, ``matvecs`` (products computed so far),
    ``strategy`` (how a product is computed, for reports), ``layout`` (the parameter layout of the
    vectors, :class:`deep.curvature.params.ParamLayout`, or None for an abstract operator).
    """

    n: int
    dtype: torch.dtype
    device: torch.device
    strategy: str = "callable"
    layout = None

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.n = checks.integer("n", n, low=1)
        self.dtype, self.device = dtype, torch.device(device)
        self.matvecs = 0

    def _matvec(self, v: Tensor) -> Tensor:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    def matvec(self, v: Tensor) -> Tensor:
        """A v for a flat vector v of length n (cast to the operator's dtype and device)."""
        v = torch.as_tensor(v).to(device=self.device, dtype=self.dtype)
        if v.shape != (self.n,):
            raise ValueError(f"flat vector must have shape ({self.n},); got {tuple(v.shape)}")
        self.matvecs += 1
        return self._matvec(v)

    __call__ = matvec

    def matmat(self, V: Tensor) -> Tensor:
        """A V for an (n, m) matrix of columns (m products; an operator may compute several per pass,
        :meth:`block_size`)."""
        V = torch.as_tensor(V).to(device=self.device, dtype=self.dtype)
        if V.ndim != 2 or V.shape[0] != self.n:
            raise ValueError(f"V must have shape ({self.n}, m); got {tuple(V.shape)}")
        self.matvecs += V.shape[1]
        return self._matmat(V)

    def _matmat(self, V: Tensor) -> Tensor:
        return torch.stack([self._matvec(V[:, j]) for j in range(V.shape[1])], dim=1)

    def block_size(self) -> int:
        """How many columns a :meth:`matmat` computes together at its best (1: one at a time)."""
        return 1

    def __matmul__(self, x: Tensor) -> Tensor:
        return self.matmat(x) if torch.as_tensor(x).ndim == 2 else self.matvec(x)

    def __add__(self, other: "CurvatureOperator") -> "SumOperator":
        return SumOperator(self, other)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 numpy in and out) over the same products."""
        import numpy as np
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            v = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1))
            return self.matvec(v).detach().cpu().double().numpy()

        return LinearOperator((self.n, self.n), matvec=mv, rmatvec=mv, dtype=np.float64)

    def start_direction(self) -> Tensor | None:
        """A direction likely to overlap the top eigenvectors, known at no extra product (None here).

        Operators over a network return the full-batch gradient g (mapped like their vectors): at the
        Edge of Stability g oscillates along the top eigenvector of H.
        """
        return None

    def to_dense(self) -> Tensor:
        """The n x n matrix, column by column (n products: small problems only)."""
        return self.matmat(torch.eye(self.n, dtype=self.dtype, device=self.device))


class CallableOperator(CurvatureOperator):
    """A user's function ``fn: v -> A v`` (A symmetric n x n) as a :class:`CurvatureOperator`."""

    def __init__(self, fn: Callable[[Tensor], Tensor], n: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        if not callable(fn):
            raise ValueError(f"fn must be callable v -> A v; got {type(fn).__name__}")
        super().__init__(n, dtype, device)
        self.fn = fn

    def _matvec(self, v: Tensor) -> Tensor:
        w = torch.as_tensor(self.fn(v))
        if w.shape != (self.n,):
            raise ValueError(f"matvec(v) must be a vector of shape ({self.n},); got {tuple(w.shape)}")
        return w.to(device=self.device, dtype=self.dtype)


class DiagonalOperator(CurvatureOperator):
    """v -> d * v for a flat vector d (e.g. coupled weight decay: diag(wd))."""

    def __init__(self, d: Tensor) -> None:
        d = torch.as_tensor(d)
        if d.ndim != 1:
            raise ValueError(f"d must be a flat vector; got shape {tuple(d.shape)}")
        super().__init__(d.numel(), d.dtype, d.device)
        self.d = d
        self.strategy = "diagonal"

    def _matvec(self, v: Tensor) -> Tensor:
        return self.d * v

    def _matmat(self, V: Tensor) -> Tensor:
        return self.d[:, None] * V

    def block_size(self) -> int:
        return 1 << 16


class SumOperator(CurvatureOperator):
    """v -> A v + B v (each product of the sum counts one product of A and one of B)."""

    def __init__(self, a: CurvatureOperator, b: CurvatureOperator) -> None:
        a, b = as_operator(a), as_operator(b)
        if a.n != b.n:
            raise ValueError(f"operators of a sum must have the same size; got {a.n} and {b.n}")
        super().__init__(a.n, a.dtype, a.device)
        self.a, self.b = a, b
        self.layout = a.layout if a.layout is not None else b.layout
        self.strategy = f"{a.strategy} + {b.strategy}"

    def _matvec(self, v: Tensor) -> Tensor:
        return self.a.matvec(v) + self.b.matvec(v).to(device=self.device, dtype=self.dtype)

    def _matmat(self, V: Tensor) -> Tensor:
        return self.a.matmat(V) + self.b.matmat(V).to(device=self.device, dtype=self.dtype)

    def block_size(self) -> int:
        return min(self.a.block_size(), self.b.block_size())

    def start_direction(self) -> Tensor | None:
        return self.a.start_direction()


class PreconditionedOperator(CurvatureOperator):
    """v -> P^-1/2 A P^-1/2 v for a diagonal P > 0 given as a flat vector ``p_diag``, by composition.

    Its eigenvalues are those of the non-symmetric P^-1 A; for A = H the top one is S_P.  An
    eigenvector u of P^-1/2 A P^-1/2 gives the eigenvector P^-1/2 u of P^-1 A.
    """

    def __init__(self, hessian: CurvatureOperator, p_diag: Tensor) -> None:
        hessian = as_operator(hessian)
        if p_diag.shape != (hessian.n,):
            raise ValueError(f"p_diag must have shape ({hessian.n},); got {tuple(p_diag.shape)}")
        if not bool(torch.all(p_diag > 0)):
            raise ValueError("p_diag must be > 0 everywhere (P = sqrt(v_hat) + eps with eps > 0)")
        super().__init__(hessian.n, hessian.dtype, hessian.device)
        self.hessian = hessian
        self.inv_sqrt_p = p_diag.to(device=hessian.device, dtype=hessian.dtype).rsqrt()
        self.layout, self.strategy = hessian.layout, hessian.strategy

    def _matvec(self, v: Tensor) -> Tensor:
        return self.inv_sqrt_p * self.hessian.matvec(self.inv_sqrt_p * v)

    def _matmat(self, V: Tensor) -> Tensor:
        scale = self.inv_sqrt_p[:, None]
        return scale * self.hessian.matmat(scale * V)

    def block_size(self) -> int:
        return self.hessian.block_size()

    def start_direction(self) -> Tensor | None:
        g = self.hessian.start_direction()
        return None if g is None else self.inv_sqrt_p * g


class BlockPreconditionedOperator(CurvatureOperator):
    """v -> P^-1/2 A P^-1/2 v for any preconditioner P that applies P^-1/2 to flat vectors (``inv_sqrt``, the
    protocol of :mod:`deep.curvature.block_preconditioners`: Kronecker factors, eigenbases, a user's own),
    by composition.  Its eigenvalues are those of P^-1 A; with P scaled by step sizes (D^1/2 = e^1/2 P^-1/2)
    the top one is eta_S_P."""

    def __init__(self, hessian: CurvatureOperator, preconditioner) -> None:
        hessian = as_operator(hessian)
        if not callable(getattr(preconditioner, "inv_sqrt", None)):
            raise ValueError(f"preconditioner must apply P^-1/2 through inv_sqrt(v); got {type(preconditioner).__name__}")
        if getattr(preconditioner, "n", hessian.n) != hessian.n:
            raise ValueError(f"preconditioner must act on vectors of length {hessian.n}; got {preconditioner.n}")
        super().__init__(hessian.n, hessian.dtype, hessian.device)
        self.hessian, self.preconditioner = hessian, preconditioner
        self.layout, self.strategy = hessian.layout, hessian.strategy

    def _half(self, v: Tensor) -> Tensor:
        return self.preconditioner.inv_sqrt(v).to(device=self.device, dtype=self.dtype)

    def _matvec(self, v: Tensor) -> Tensor:
        return self._half(self.hessian.matvec(self._half(v)))

    def start_direction(self) -> Tensor | None:
        g = self.hessian.start_direction()
        return None if g is None else self._half(g)


def as_operator(obj, n: int | None = None, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> CurvatureOperator:
    """``obj`` as a :class:`CurvatureOperator`: an operator is returned as is; anything with a
    ``shape`` (or ``n``) and ``__call__``/``matvec`` (e.g. a user's class), or a plain function with
    ``n`` given, is wrapped in a :class:`CallableOperator`."""
    if isinstance(obj, CurvatureOperator):
        return obj
    fn = getattr(obj, "matvec", obj)
    if n is None:
        n = getattr(obj, "n", None) or (getattr(obj, "shape", None) or (None,))[0]
    if n is None:
        raise ValueError("n must be given for an operator that is a plain function v -> A v")
    dtype = getattr(obj, "dtype", dtype)
    device = getattr(obj, "device", None) if device is None else device
    return CallableOperator(fn, int(n), dtype if isinstance(dtype, torch.dtype) else torch.float32,
                            device if device is not None else "cpu")


def cold_start(op: CurvatureOperator, seed: int = 0) -> Tensor:
    """Start vector of a cold eigenvalue solve: z/||z|| + d/||d||, z ~ N(0, I) from ``seed`` and d the
    operator's :meth:`~CurvatureOperator.start_direction` (just z/||z|| when it has none or d = 0).

    The random part keeps every eigenvector in the Krylov space; the gradient part (free with the
    cached strategies) adds a large component along the top eigenvectors at the Edge of Stability.
    """
    z = torch.randn(op.n, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    v = (z / torch.linalg.vector_norm(z)).to(device=op.device, dtype=op.dtype)
    d = op.start_direction()
    if d is not None:
        norm = torch.linalg.vector_norm(d)
        if bool(torch.isfinite(norm)) and float(norm) > 0:
            v = v + d.to(device=op.device, dtype=op.dtype) / norm
    return v
