"""Preconditioners that are not diagonal: the protocol, its blocks, and the readers of Muon, Shampoo and SOAP.

**The protocol.**  A preconditioner P is anything that applies P^-1/2 (P symmetric positive definite, or
semi-definite with a pseudo-inverse) to a flat vector in the layout of a
:class:`deep.curvature.params.ParamLayout`: an object with ``inv_sqrt(v) -> Tensor`` (v flat, of length n).
That is all :class:`deep.curvature.operators.BlockPreconditionedOperator` needs to form P^-1/2 A P^-1/2,
whose eigenvalues are those of P^-1 A: S_P = lambda_max(P^-1/2 H P^-1/2) for any P.  The package's own,
:class:`BlockPreconditioner`, is block diagonal over the parameters, one :class:`Block` per tensor:

* :class:`DiagonalBlock`: P = diag(p) (Adam, RMSprop, Adagrad, ... : :mod:`deep.curvature.preconditioners`);
* :class:`KroneckerBlock`: P^-1/2 = F_1 (x) F_2 (x) ..., one symmetric factor along each dimension of the
  tensor (None: the identity there); a matrix W (m x n) maps to F_1 W F_2.  Shampoo (F_i = the square
  roots of its stored inverse roots), Muon (one factor, on the smaller side);
* :class:`EigenbasisBlock`: P = Q diag(d) Q^T with Q = Q_1 (x) Q_2 (x) ... orthogonal: SOAP.

A user brings a preconditioner as such an object, a :class:`BlockPreconditioner` of their own blocks, a
mapping {parameter name: function x -> P^-1/2 x on tensors of the parameter's shape} or a flat tensor of
diag(P) (:func:`as_preconditioner`); ``optimizer=`` of :func:`deep.curvature_operator`,
:func:`deep.preconditioned_sharpness`, :class:`deep.SharpnessTracker` and :func:`deep.measure_edge`
(with ``lr=`` and ``constant=``) take it.

**The readers.**  :func:`preconditioner_of` (one entry point: optimizer, optimizers or preconditioner)
reads P from optimizers as their last step used it:

* ``torch.optim.Muon``: the step orthogonalises M (``lerp(g, b, momentum)`` with Nesterov, else the buffer
  b): O = NS(M) ~ (M M^T)^-1/2 M.  Frozen, O = P^-1 M with P = (M M^T)^1/2 from the left when the weight
  is wide (m <= n), P = (M^T M)^1/2 from the right when it is tall, the side torch's Newton-Schulz works
  on; directions where M is singular take no step (pseudo-inverse).  ``muon="newton_schulz"`` takes
  instead the P that torch's quintic iteration (a, b, c, 5 steps) applies in exact arithmetic,
  P^-1 = f^5(s / |M|_F) / s on each singular value s of M: the iteration is an odd polynomial of M.
  Either way the orthogonalisation is frozen, an approximation (the real step's dependence on M is not).
* ``pytorch_optimizer.Shampoo`` (momentum 0, tensors of at most 2 dimensions): its stored
  ``inv_pre_cond_i`` are the factors of P^-1 (L^-1/4, R^-1/4 for a matrix; (eps I + sum g g^T)^-1/2 for a
  vector), exactly as the step used them, also between recomputations.
* ``pytorch_optimizer.SOAP``: P = Q diag(sqrt(v) + eps) Q^T / sqrt(1 - beta2^t), with the Q and v the
  step used (kept by :mod:`deep.curvature.step_records`: a refresh of the eigenbasis after the update
  replaces both); dimensions above ``max_precondition_dim``, and vectors, in the identity basis.

:func:`step_sizes` gives each tensor's step size e: the lr of its group, times Muon's shape adjustment,
or Adafactor's relative step and clipping alpha_t / max(1, RMS(U_t)/d) as the step used it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from aeos_theory.optimizers import OPTIMIZERS

from .optimizer_class import optimizer_class
from .params import ParamLayout
from .preconditioners import RULE_OF_CLASS, diagonal_of, group_decay
from .step_records import record_of

#: The two frozen Muon preconditioners (module docstring).
MUON_RULES = ("polar", "newton_schulz")


class Block:
    """P_b of one parameter tensor: ``inv_sqrt(x)`` applies P_b^-1/2 to a tensor of the parameter's shape."""

    identity = False

    def inv_sqrt(self, x: Tensor) -> Tensor:  # pragma: no cover - every block defines it
        raise NotImplementedError


class DiagonalBlock(Block):
    """P = diag(p), p > 0 of the parameter's shape."""

    def __init__(self, p: Tensor) -> None:
        if not bool(torch.all(p > 0)):
            raise ValueError("p must be > 0 everywhere (a diagonal preconditioner P = diag(p))")
        self.inv_sqrt_p = p.double().rsqrt()
        self.identity = bool(torch.all(p == 1))

    def inv_sqrt(self, x: Tensor) -> Tensor:
        return self.inv_sqrt_p.to(x) * x


def _along(factor: Tensor, x: Tensor, dim: int, transpose: bool = False) -> Tensor:
    """The matrix ``factor`` (or its transpose) applied along dimension ``dim`` of ``x``."""
    return torch.movedim(torch.tensordot(factor.to(x), x, dims=([0 if transpose else 1], [dim])), 0, dim)


class KroneckerBlock(Block):
    """P^-1/2 = F_1 (x) ... (x) F_k: ``factors[i]`` (symmetric, d_i x d_i) acts along dimension i (None: I)."""

    def __init__(self, factors: Sequence[Tensor | None]) -> None:
        self.factors = [None if f is None else f.double() for f in factors]

    def inv_sqrt(self, x: Tensor) -> Tensor:
        for dim, factor in enumerate(self.factors):
            if factor is not None:
                x = _along(factor, x, dim)
        return x


class EigenbasisBlock(Block):
    """P = Q diag(d) Q^T, Q = Q_1 (x) ... (x) Q_k (orthogonal ``bases[i]`` along dimension i; None: I), d > 0 of
    the parameter's shape in the rotated coordinates: P^-1/2 x = Q (d^-1/2 * (Q^T x))."""

    def __init__(self, bases: Sequence[Tensor | None], d: Tensor) -> None:
        self.bases = [None if q is None else q.double() for q in bases]
        self.inv_sqrt_d = d.double().rsqrt()

    def inv_sqrt(self, x: Tensor) -> Tensor:
        for dim, q in enumerate(self.bases):
            if q is not None:
                x = _along(q, x, dim, transpose=True)
        x = self.inv_sqrt_d.to(x) * x
        for dim, q in enumerate(self.bases):
            if q is not None:
                x = _along(q, x, dim)
        return x


class FunctionBlock(Block):
    """A user's function x -> P^-1/2 x on tensors of the parameter's shape."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def inv_sqrt(self, x: Tensor) -> Tensor:
        return torch.as_tensor(self.fn(x)).to(x)


class BlockPreconditioner:
    """P = blockdiag(P_b / e_b) over the tensors of ``layout``: ``blocks`` {name: :class:`Block`} and optional
    scalar step sizes ``scale`` {name: e_b} (default 1), so that ``inv_sqrt`` applies (e_b / P_b)^1/2 = D^1/2
    when P is scaled by the step sizes (:meth:`scaled`).  A block with e_b = 0 takes no step (D = 0 on it)."""

    def __init__(self, layout: ParamLayout, blocks: Mapping[str, Block],
                 scale: Mapping[str, float] | None = None) -> None:
        missing = [name for name in layout.names if name not in blocks]
        if missing:
            raise ValueError(f"blocks must cover every parameter of the layout; missing: {missing}")
        self.layout, self.blocks = layout, {name: blocks[name] for name in layout.names}
        self.scale = {name: float((scale or {}).get(name, 1.0)) for name in layout.names}
        if any(not (e >= 0 and math.isfinite(e)) for e in self.scale.values()):
            raise ValueError(f"scale must hold finite step sizes >= 0; got {self.scale}")
        self.n = layout.n

    @property
    def identity(self) -> bool:
        """True when P = I (every block the identity and every scale 1)."""
        return all(b.identity for b in self.blocks.values()) and all(e == 1.0 for e in self.scale.values())

    def scaled(self, scale: Mapping[str, float]) -> "BlockPreconditioner":
        """The same blocks with step sizes e_b: ``inv_sqrt`` then applies D^1/2 = e_b^1/2 P_b^-1/2."""
        return BlockPreconditioner(self.layout, self.blocks, {n: self.scale[n] * float(scale[n]) for n in self.blocks})

    def inv_sqrt(self, v: Tensor) -> Tensor:
        """P^-1/2 v (with the step sizes: D^1/2 v) for a flat vector v in the layout."""
        parts = self.layout.split(v)
        out = []
        for name, block in self.blocks.items():
            e = self.scale[name]
            x = parts[name]
            out.append(torch.zeros_like(x) if e == 0.0 else (math.sqrt(e) * block.inv_sqrt(x) if e != 1.0
                                                            else block.inv_sqrt(x)))
        return self.layout.flatten(out).to(v)

    def diagonal(self) -> Tensor | None:
        """diag(P / e) as one flat float64 vector when every block is diagonal (inf where e = 0), else None."""
        if not all(isinstance(b, DiagonalBlock) for b in self.blocks.values()):
            return None
        parts = [b.inv_sqrt_p.reshape(-1).square().reciprocal() / self.scale[name] if self.scale[name] > 0
                 else torch.full((b.inv_sqrt_p.numel(),), math.inf, dtype=torch.float64)
                 for name, b in self.blocks.items()]
        return torch.cat(parts)

    def to_dense(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """P^-1/2 (or D^1/2) as an n x n matrix, column by column (small problems and tests)."""
        eye = torch.eye(self.n, dtype=dtype)
        return torch.stack([self.inv_sqrt(eye[:, j]) for j in range(self.n)], dim=1)


class CallablePreconditioner:
    """A user's ``inv_sqrt`` on flat vectors, with its layout."""

    identity = False

    def __init__(self, fn: Callable[[Tensor], Tensor], layout: ParamLayout) -> None:
        self.fn, self.layout, self.n = fn, layout, layout.n

    def inv_sqrt(self, v: Tensor) -> Tensor:
        w = torch.as_tensor(self.fn(v))
        if w.shape != (self.n,):
            raise ValueError(f"inv_sqrt(v) must be a flat vector of shape ({self.n},); got {tuple(w.shape)}")
        return w.to(v)


def is_preconditioner(obj: Any) -> bool:
    """True for a user's preconditioner (module docstring), False for an optimizer or a sequence of them."""
    if isinstance(obj, torch.optim.Optimizer):
        return False
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(o, torch.optim.Optimizer) for o in obj):
        return False
    return callable(getattr(obj, "inv_sqrt", None)) or isinstance(obj, (Mapping, Tensor))


def as_preconditioner(obj: Any, layout: ParamLayout) -> BlockPreconditioner | CallablePreconditioner:
    """A user's preconditioner over ``layout``: an object with ``inv_sqrt`` (a :class:`BlockPreconditioner` is
    checked against the layout), a mapping {name: Block or function x -> P^-1/2 x}, or a flat diag(P)."""
    if isinstance(obj, BlockPreconditioner):
        if obj.layout.names != layout.names or obj.layout.shapes != layout.shapes:
            raise ValueError(f"preconditioner layout must be that of the measured parameters {list(layout.names)}; "
                             f"got {list(obj.layout.names)}")
        return obj
    if isinstance(obj, Tensor):
        if obj.shape != (layout.n,):
            raise ValueError(f"a diagonal preconditioner must be a flat diag(P) of shape ({layout.n},); "
                             f"got {tuple(obj.shape)}")
        return BlockPreconditioner(layout, {name: DiagonalBlock(p) for name, p in layout.split(obj).items()})
    if isinstance(obj, Mapping):
        return BlockPreconditioner(layout, {name: b if isinstance(b, Block) else FunctionBlock(b)
                                            for name, b in obj.items()})
    if callable(getattr(obj, "inv_sqrt", None)):
        return CallablePreconditioner(obj.inv_sqrt, layout)
    raise ValueError("a preconditioner must have inv_sqrt(v), be a mapping {parameter name: x -> P^-1/2 x} or a "
                     f"flat diag(P); got {type(obj).__name__}")


# ----------------------------------------------------------------------------- readers
def _symmetric_power(matrix: Tensor, power: float, relative_floor: float = 1e-12) -> Tensor:
    """matrix^power for a symmetric positive semi-definite matrix (float64), by eigh; eigenvalues below
    ``relative_floor`` times the largest are a null space: 0 there (a pseudo-inverse for power < 0)."""
    values, vectors = torch.linalg.eigh(matrix.double())
    floor = relative_floor * float(values.abs().max()) if values.numel() else 0.0
    kept = values > floor
    scaled = torch.where(kept, values.clamp(min=floor if floor > 0 else 0.0) ** power, torch.zeros_like(values))
    return (vectors * scaled) @ vectors.T


def _muon_matrix(optimizer, param: Tensor, group: dict, state: dict) -> Tensor:
    buf = state.get("momentum_buffer")
    if buf is None:
        raise ValueError("optimizer (Muon) has taken no step yet; take at least one optimizer.step() before reading P")
    if not group["nesterov"]:
        return buf
    record = record_of(optimizer, param)
    if record is not None:
        return record["M"]
    if param.grad is None:
        raise ValueError("Muon stepped before deep was imported and the gradient is gone, so the matrix its last "
                         "step orthogonalised is unknown; import deep before training")
    warnings.warn("Muon stepped before deep was imported: the matrix its last step orthogonalised is rebuilt from "
                  "the gradient still held and the momentum buffer", RuntimeWarning, stacklevel=4)
    return param.grad.lerp(buf, group["momentum"])


def _newton_schulz_gain(s: Tensor, norm: float, coefficients: Sequence[float], steps: int) -> Tensor:
    """f^steps(s / norm) / s: what torch's quintic Newton-Schulz iteration multiplies singular value s by
    (f(x) = a x + b x^3 + c x^5, in exact arithmetic)."""
    a, b, c = coefficients
    x = s / norm
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x / s


def muon_block(optimizer, param: Tensor, group: dict, rule: str = "polar") -> KroneckerBlock:
    """P^-1/2 of Muon's frozen orthogonalisation (module docstring): one factor on the smaller side."""
    m = _muon_matrix(optimizer, param, group, optimizer.state.get(param, {})).double()
    wide = m.shape[0] <= m.shape[1]
    gram = m @ m.T if wide else m.T @ m
    if rule == "polar":
        factor = _symmetric_power(gram, -0.25)
    else:
        values, vectors = torch.linalg.eigh(gram)
        s = values.clamp(min=0).sqrt()
        norm = max(float(torch.linalg.matrix_norm(m)), group["eps"])
        gain = torch.where(s > 0, _newton_schulz_gain(s, norm, group["ns_coefficients"], group["ns_steps"]),
                           torch.full_like(s, group["ns_coefficients"][0] ** group["ns_steps"] / norm))
        factor = (vectors * gain.clamp(min=0).sqrt()) @ vectors.T
    return KroneckerBlock([factor, None] if wide else [None, factor])


def shampoo_block(optimizer, param: Tensor, group: dict) -> KroneckerBlock:
    """P^-1/2 of pytorch_optimizer's Shampoo: the square roots of its stored inverse-root factors."""
    state = optimizer.state.get(param, {})
    if param.dim() > 2:
        raise ValueError(f"Shampoo's preconditioner is read for tensors of at most 2 dimensions; parameter of shape "
                         f"{tuple(param.shape)}")
    if group.get("step", 0) < 1 or "inv_pre_cond_0" not in state:
        raise ValueError("optimizer (Shampoo) has taken no step yet; take at least one optimizer.step() before "
                         "reading P")
    factors = [_symmetric_power(state[f"inv_pre_cond_{i}"], 0.5, relative_floor=0.0) for i in range(param.dim())]
    return KroneckerBlock(factors)


def soap_block(optimizer, param: Tensor, group: dict) -> EigenbasisBlock:
    """P of pytorch_optimizer's SOAP, with the eigenbasis and second moment its last update used."""
    state = optimizer.state.get(param, {})
    updates = group.get("step", 0) - 1
    if updates < 1 or "Q" not in state:
        raise ValueError("optimizer (SOAP) has taken no update yet (its first step only builds the eigenbasis); "
                         "take two optimizer.step() before reading P")
    record = record_of(optimizer, param)
    bases, v = (record["Q"], record["exp_avg_sq"]) if record is not None else (state["Q"], state["exp_avg_sq"])
    beta2 = group["betas"][1]
    d = (v.double().sqrt() + group["eps"]) / math.sqrt(1.0 - beta2**updates)
    return EigenbasisBlock([q if isinstance(q, Tensor) and q.numel() else None for q in bases], d)


def optimizer_block(optimizer: torch.optim.Optimizer, param: Tensor, group: dict, name: str,
                    muon: str = "polar") -> Block:
    """The block of P that ``optimizer`` applied to ``param`` at its last step."""
    rule = RULE_OF_CLASS[optimizer_class(optimizer)]
    if rule == "polar":
        return muon_block(optimizer, param, group, muon)
    if rule == "kronecker":
        return shampoo_block(optimizer, param, group)
    if rule == "eigenbasis":
        return soap_block(optimizer, param, group)
    return DiagonalBlock(diagonal_of(optimizer, param, group, name))


Optimizers = torch.optim.Optimizer | Sequence[torch.optim.Optimizer]


def owners(optimizers: Optimizers, model: nn.Module, layout: ParamLayout) -> dict[str, tuple[torch.optim.Optimizer, dict]]:
    """{parameter name: (the optimizer that holds it, its param group)} over ``layout``; ValueError when a
    parameter is held by none or by two."""
    optimizers = [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else list(optimizers)
    if not optimizers:
        raise ValueError("optimizer must be a torch.optim optimizer or a non-empty sequence of them")
    held: dict[int, tuple[torch.optim.Optimizer, dict]] = {}
    for opt in optimizers:
        optimizer_class(opt)
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) in held:
                    raise ValueError("a parameter is held by two of the optimizers; each must hold its own parameters")
                held[id(p)] = (opt, group)
    named = dict(model.named_parameters())
    out = {}
    for name in layout.names:
        if id(named[name]) not in held:
            raise ValueError(f"parameter {name!r} is not in the optimizer's param_groups; the optimizer "
                             "(or optimizers) must hold every trainable parameter of the model")
        out[name] = held[id(named[name])]
    return out


def preconditioner_of(optimizer: Any, model: nn.Module, layout: ParamLayout, *,
                      muon: str = "polar") -> BlockPreconditioner | CallablePreconditioner:
    """P over the parameters of ``layout``: from an optimizer's state as its last step used it, from several
    optimizers that share the model (Muon for the matrices, AdamW for the rest), or a user's preconditioner
    (:func:`as_preconditioner`).  ``muon``: ``"polar"`` or ``"newton_schulz"`` (module docstring)."""
    if muon not in MUON_RULES:
        raise ValueError(f"muon must be one of {', '.join(MUON_RULES)}; got {muon!r}")
    if is_preconditioner(optimizer):
        return as_preconditioner(optimizer, layout)
    named = dict(model.named_parameters())
    blocks = {name: optimizer_block(opt, named[name], group, name, muon)
              for name, (opt, group) in owners(optimizer, model, layout).items()}
    return BlockPreconditioner(layout, blocks)


def decay_of(optimizers: Optimizers, model: nn.Module, layout: ParamLayout) -> Tensor:
    """The coupled decay W of each parameter's group (:func:`deep.curvature.preconditioners.group_decay`), flat
    over ``layout`` (float64)."""
    own = owners(optimizers, model, layout)
    return torch.cat([torch.full((numel,), group_decay(*own[name]), dtype=torch.float64)
                      for name, numel in zip(layout.names, layout.numels)])


def is_identity_of(optimizer: Any) -> bool:
    """True when every optimizer given has P = I (SGD, ASGD)."""
    optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
    return all(RULE_OF_CLASS[optimizer_class(o)] is None for o in optimizers)


def _muon_adjustment(shape: torch.Size, adjust_lr_fn: str | None) -> float:
    """torch's Muon ``_adjust_lr`` factor: sqrt(max(1, A/B)) ("original", the default), 0.2 sqrt(max(A, B))
    ("match_rms_adamw"); A, B the first two dimensions."""
    a, b = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, a / b))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(a, b))
    return 1.0


def step_sizes(optimizers: Optimizers, model: nn.Module, layout: ParamLayout,
               lr_of: Callable[[torch.optim.Optimizer, dict], float]) -> dict[str, float]:
    """Each tensor's step size e (module docstring), with ``lr_of(optimizer, group)`` the lr its last update used."""
    named = dict(model.named_parameters())
    out = {}
    for name, (opt, group) in owners(optimizers, model, layout).items():
        spec_factor = next(s.step_factor for s in OPTIMIZERS.values() if s.torch_class == optimizer_class(opt))
        lr = lr_of(opt, group)
        if spec_factor == "muon":
            out[name] = lr * _muon_adjustment(named[name].shape, group.get("adjust_lr_fn"))
        elif spec_factor == "adafactor":
            out[name] = 0.0 if lr == 0 else _adafactor_step(opt, named[name], group)
        else:
            out[name] = lr
    return out


def _adafactor_step(optimizer, param: Tensor, group: dict) -> float:
    """alpha_t / max(1, RMS(U_t)/d), the step torch's Adafactor took on ``param`` (kept by the step hooks)."""
    record = record_of(optimizer, param)
    if record is None or "denom" not in record:
        raise ValueError("Adafactor's step size depends on the iterate before the step (its relative step and RMS "
                         "clipping), which was not recorded: import deep before training")
    return record["alpha"] / record["denom"]

