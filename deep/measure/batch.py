"""Batch sharpness: the curvature a minibatch step meets, raw, in the optimizer's metric, and along its step.

A minibatch step descends the loss L_B of a random batch B, with gradient g_B and Hessian H_B, not the
full-batch loss.  The quantity minibatch SGD holds at its edge is the *batch sharpness* (Andreyev and
Beneventano, "Edge of Stochastic Stability", arXiv 2412.20553), a ratio of expectations over random
batches of the training batch size b:

    BS   = E_B[ g_B^T H_B g_B ] / E_B[ |g_B|^2 ]                                   (loss / parameter^2)
    BS_P = E_B[ gh_B^T P^-1 (H_B + W) P^-1 gh_B ] / E_B[ gh_B^T P^-1 gh_B ]        (1 / step length)
    update ratio = E_B[ d_B^T (H_B + W) d_B ] / E_B[ d_B^T gh_B ]                  (dimensionless)

* ``raw`` (no optimizer): BS, to compare with 2/eta (minibatch SGD stabilises at eta * BS = 2, while the
  full-batch S stays below).
* ``preconditioned``: BS_P, with P read from the optimizer's state exactly as
  :func:`deep.preconditioned_sharpness` reads it (the denominator of the update just taken,
  :mod:`deep.curvature.preconditioners`; P = I for SGD), W the coupled weight decay and gh_B = g_B + W theta
  the gradient of the objective L_B + wd/2 |theta|^2 the optimizer descends (W = 0 without decay or with
  AdamW's decoupled decay).  The result also carries eta * BS_P (dimensionless; with param groups at
  different lr, E[gh^T D (H + W) D gh] / E[gh^T D gh], D = diag(lr_g / P)) and its ratio to the threshold
  constant c_t of that update, step-exact as :func:`deep.measure_edge`: the lr of the update just taken
  (remembered as the step ran; ``lr=`` overrides), its step t and c_t from :func:`~deep.measure.edge.edge_setting`
  (38 for Adam at beta1 = 0.9 once its bias correction has faded; 2 + 2 beta for heavy ball).
* ``update``: along the optimizer's own step.  d_B = theta_t - theta_(t+1) is the step ``optimizer.step()``
  would take from its current state if the gradient were g_B (:mod:`deep.measure.next_step`: torch's own
  arithmetic, e.g. for Adam eta m_hat/(sqrt(v_hat) + eps) with m and v updated by g_B, for heavy ball
  eta (beta buf + g_B)), so the ratio is eta E[s^T H_B s] / E[s^T g_B] with s = d / eta.  It is the
  second-order balance of one step: the quadratic model of L_B falls along d_B iff d^T H d / d^T g < 2, so
  its reference value (``constant``) is 2 for every optimizer.  The lr is the one the next step would use
  (the groups' current lr).

Which is held where is measured, not assumed.  For SGD with heavy-ball momentum beta, Andreyev ("Momentum
Further Constrains Sharpness at the Edge of Stochastic Stability", arXiv 2604.14108) reports eta * BS at
2(1 - beta) at small batch and 2(1 + beta) at large batch; read for Adam's momentum with P frozen, that
suggests eta * BS_P near 2 at small batch and near 38 (beta1 = 0.9) at large batch.  Training runs record
the three forms (:mod:`deep.training.runlog`), and :mod:`deep.training.minibatch_edge` sweeps the batch size.

**Estimator.**  Batches are drawn without replacement, each ``randperm(N)[:b]`` from a generator seeded
with ``seed`` (the training run's sampler, :mod:`deep.curvature.minibatch`), independently of one another.
From k batches with numerators A_i and denominators B_i the estimate is R = sum A_i / sum B_i, and its
standard error the delta method's for a ratio of means,

    stderr^2 = sum_i (A_i - R B_i)^2 / (k (k - 1) mean(B)^2),

(nan for k = 1).  Sampling stops once k >= :data:`MIN_SAMPLES` and stderr <= ``tol`` |R| for every form asked
for, or at ``samples`` batches.  For b = N every batch is the whole data set: the result is the full
batch's g^T H g / |g|^2 (and its forms) from one full-batch gradient and one product per form
(:mod:`deep.curvature.hessian`, chunked within its memory budget), with stderr 0.

**Several processes.**  On a :class:`deep.Shard` every rank draws the same batches from the whole data set
(the examples numbered over the ranks in order) and computes its members' share; the sums are
all-reduced, so every rank returns the same numbers, and the same seed gives one process's batches.
``seed``, ``batch_size`` and ``samples`` must agree on every rank (checked).

**Bad input** (ValueError): ``batch_size`` < 1 or larger than the data; an optimizer whose P cannot be read
(a class :mod:`deep.curvature.preconditioners` does not know, an adaptive one that has not stepped) or
that the registry does not describe for the threshold; a model in train mode with Dropout (its loss would
be random; call ``model.eval()``).

**Cost.**  Per batch one gradient and one Hessian-vector product per direction (two for BS_P when groups
use different lr).  On one process batches of at most 128 examples are computed K at a time with
``torch.func.vmap`` (:mod:`deep.curvature.minibatch`); ``benchmarks/batch_sharpness.py`` gives the cost of
reaching a 5% relative stderr in units of one minibatch gradient + HVP pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from aeos_base import checks

from ..curvature.block_preconditioners import BlockPreconditioner
from ..curvature.build import preconditioner_of
from ..curvature.hessian import hessian_operator
from ..curvature.inputs import LossFn, check_loss, check_model
from ..curvature.minibatch import BatchCurvature, Direction, Population
from ..curvature.params import ParamLayout
from ..curvature.preconditioners import coupled_decay_diagonal, group_diagonal
from .edge import LearningRates, edge_setting, identify_group
from .last_step import state_count
from .next_step import NextStep

#: The forms :func:`batch_sharpness_forms` measures (module docstring).
FORMS = ("raw", "preconditioned", "update")
#: ``direction=`` of :func:`batch_sharpness`.
DIRECTIONS = ("gradient", "update")
#: Batches drawn before the stopping rule is first tried (a stderr from fewer is itself too noisy).
MIN_SAMPLES = 10
DEFAULT_SAMPLES = 200
DEFAULT_TOL = 0.05
#: The reference value of the update ratio: a step d lowers the quadratic model of L_B iff
#: d^T H_B d / d^T g_B < 2.
UPDATE_BALANCE = 2.0


@dataclass(frozen=True)
class BatchSharpness:
    """A batch sharpness estimate (module docstring): ``form`` ("raw", "preconditioned" or "update"), its
    ``value`` (BS in loss/parameter^2, BS_P in 1/step length, the update ratio dimensionless) and
    ``stderr``, from ``samples`` batches of ``batch_size``; ``converged`` when stderr <= tol |value| (or exact).

    With an optimizer: ``eta_value`` = eta * value (eta * BS_P, or the update ratio itself) and ``eta_stderr``,
    the ``constant`` it is compared with (c_t of the update just taken; 2 for the update ratio), their
    ``ratio`` (1 at the edge), the package ``optimizer`` name, the ``step`` described (the update just
    taken; the next one for the update ratio; None when the optimizer keeps no count) and each group's
    ``lr`` used.  None for the raw form.
    """

    form: str
    value: float
    stderr: float
    samples: int
    batch_size: int
    converged: bool
    optimizer: str | None = None
    step: int | None = None
    lr: tuple[float, ...] | None = field(default=None, repr=False)
    eta_value: float | None = None
    eta_stderr: float | None = field(default=None, repr=False)
    constant: float | None = None
    ratio: float | None = None

    def __repr__(self) -> str:
        text = (f"BatchSharpness({self.form}, batch {self.batch_size}: {self.value:.6g} +- {self.stderr:.2g} "
                f"from {self.samples} batches")
        if self.eta_value is not None:
            text += f"; eta * value {self.eta_value:.4g} vs {self.constant:.4g}, ratio {self.ratio:.3g}"
        return text + ")"


def batch_sharpness(model: nn.Module, loss_fn: LossFn, data: Any, batch_size: int,
                    optimizer: torch.optim.Optimizer | None = None, *, direction: str = "gradient",
                    samples: int = DEFAULT_SAMPLES, tol: float = DEFAULT_TOL, seed: int = 0,
                    step: int | None = None, lr: LearningRates = None) -> BatchSharpness:
    """The batch sharpness of ``model`` at batches of ``batch_size`` examples of ``data`` (module docstring).

    Args:
        model, loss_fn, data: the loss l_i of each example (``loss_fn`` returns the mean over its chunk) and the
            examples to draw batches from: chunks, a deep.Dataset, an (X, y) pair, a DataLoader or a deep.Shard.
        batch_size: b, 1 <= b <= N (b = N: the full batch, exact).
        optimizer: None for BS; a torch.optim optimizer for BS_P (``direction="gradient"``) with eta * BS_P and
            its threshold, or for the ratio along its next step (``direction="update"``).
        samples: at most this many batches; tol: stop once stderr <= tol |value| (after :data:`MIN_SAMPLES`).
        seed: the batches' generator; step, lr: as for :func:`deep.measure_edge` (the update just taken).

    The model, its gradients and buffers and the optimizer's state are left untouched.
    """
    checks.choice("direction", direction, DIRECTIONS)
    if direction == "update" and optimizer is None:
        raise ValueError("optimizer must be given for direction='update' (the step it follows); got None")
    form = "update" if direction == "update" else ("raw" if optimizer is None else "preconditioned")
    return batch_sharpness_forms(model, loss_fn, data, batch_size, optimizer, forms=(form,), samples=samples,
                                 tol=tol, seed=seed, step=step, lr=lr)[form]


def batch_sharpness_forms(model: nn.Module, loss_fn: LossFn, data: Any, batch_size: int,
                          optimizer: torch.optim.Optimizer | None = None, *, forms: Sequence[str] = ("raw",),
                          samples: int = DEFAULT_SAMPLES, tol: float = DEFAULT_TOL, seed: int = 0,
                          step: int | None = None, lr: LearningRates = None) -> dict[str, BatchSharpness]:
    """Several forms (:data:`FORMS`) from the same batches, each batch's gradient shared: {form: result}.

    Arguments as for :func:`batch_sharpness`; ``forms`` other than "raw" need the optimizer.  Sampling stops
    when every form meets ``tol`` (or at ``samples``).  What a training run records (:mod:`deep.training.train`).
    """
    check_model(model)
    check_loss(loss_fn)
    refuse_random_modules(model)
    forms = tuple(checks.choice("forms entry", f, FORMS) for f in forms)
    if not forms or len(set(forms)) != len(forms):
        raise ValueError(f"forms must name distinct forms among {FORMS}; got {forms}")
    if optimizer is None and forms != ("raw",):
        raise ValueError(f"optimizer must be given for the forms {[f for f in forms if f != 'raw']}; got None")
    samples = checks.integer("samples", samples, low=1)
    tol = checks.real("tol", tol, low=0.0, low_inclusive=False)
    seed = checks.integer("seed", seed, low=0)
    layout = ParamLayout.of(model)
    population = Population(data, layout.device, layout.dtype)
    batch_size = checks.integer("batch_size", batch_size, low=1, high=population.size)
    _check_same_on_every_rank(population.group, seed=seed, batch_size=batch_size, samples=samples)
    curvature = BatchCurvature(model, loss_fn, layout, population.group)
    plans = [_Plan.of(form, model, layout, optimizer, curvature.theta(), step, lr) for form in forms]
    _number_plans(plans)
    directions = [d for plan in plans for d in plan.directions]
    if batch_size == population.size:
        sums = _full_batch(model, loss_fn, data, directions)
    else:
        sums = _sampled(population, curvature, batch_size, directions, plans, samples, tol, seed)
    return {plan.form: plan.result(sums, batch_size, tol) for plan in plans}


def refuse_random_modules(model: nn.Module) -> None:
    """ValueError when a module in train mode makes the loss random (Dropout with p > 0, attention dropout):
    a batch sharpness is taken of one deterministic loss per batch."""
    for name, module in model.named_modules():
        if not module.training:
            continue
        p = getattr(module, "p", 0.0) if isinstance(module, nn.modules.dropout._DropoutNd) else \
            getattr(module, "dropout", 0.0) if isinstance(module, nn.MultiheadAttention) else 0.0
        if p:
            raise ValueError(f"model must not be random: {type(module).__name__} {name or '(the model)'!r} is in train "
                             f"mode with dropout p = {p}; call model.eval() before measuring the batch sharpness")


def inverse_preconditioner(optimizer: torch.optim.Optimizer, model: nn.Module, layout: ParamLayout) -> Direction:
    """v -> P^-1 v (v of shape (..., n)) with P the optimizer's preconditioner of its last step over ``layout``, read as
    :func:`deep.preconditioned_sharpness` reads it (:func:`deep.curvature.build.preconditioner_of`), the one
    place where P enters the batch sharpness: a diagonal P by one division, any other (Muon, Shampoo, SOAP, a
    user's) as P^-1/2 applied twice."""
    p = preconditioner_of(optimizer, model, layout)
    diagonal = p.diagonal() if isinstance(p, BlockPreconditioner) else None
    if diagonal is not None:  # elementwise optimizers: P^-1 v in one division
        return lambda v: v / diagonal.to(v)

    def apply(v: Tensor) -> Tensor:  # P^-1 = P^-1/2 P^-1/2 (Muon, Shampoo, SOAP, a user's P)
        rows = v.reshape(-1, v.shape[-1])
        return torch.stack([p.inv_sqrt(p.inv_sqrt(row)) for row in rows]).reshape(v.shape)

    return apply


class _Sums:
    """Per direction, the per-batch numerators A_i and denominators B_i (float64), or one exact pair."""

    def __init__(self, directions: int, exact: bool = False) -> None:
        self.A: list[list[float]] = [[] for _ in range(directions)]
        self.B: list[list[float]] = [[] for _ in range(directions)]
        self.exact = exact

    @property
    def samples(self) -> int:
        return len(self.A[0])

    def add(self, j: int, a: list[float], b: list[float]) -> None:
        self.A[j].extend(a)
        self.B[j].extend(b)

    def estimate(self, j: int) -> tuple[float, float]:
        """(R, stderr) of direction j (module docstring)."""
        A, B = np.asarray(self.A[j]), np.asarray(self.B[j])
        mean_b = B.mean()
        if mean_b == 0:
            return math.nan, math.nan
        value = float(A.sum() / B.sum())
        if self.exact:
            return value, 0.0
        k = len(A)
        if k < 2:
            return value, math.nan
        return value, float(math.sqrt(np.sum((A - value * B) ** 2) / (k * (k - 1))) / abs(mean_b))

    def settled(self, j: int, tol: float) -> bool:
        value, stderr = self.estimate(j)
        return self.exact or (self.samples >= MIN_SAMPLES and math.isfinite(stderr) and stderr <= tol * abs(value))


@dataclass
class _Direction:
    """u = along(g_B) for one estimate (``along`` maps K gradients (K, n) to K directions); A = u^T (H_B + W) u,
    B = gh^T u with gh = g_B + W theta.  ``pure``: ``along`` is a tensor function ``vmap`` can batch (not the
    optimizer's step)."""

    along: Direction
    decay: Tensor | None
    theta: Tensor
    pure: bool = True

    def pairs(self, G: Tensor, U: Tensor, HU: Tensor) -> tuple[list[float], list[float]]:
        """(A_i, B_i) of K batches from their gradients G, directions U and products HU (K, n each), summed in
        float64."""
        A = (U * HU).sum(dim=1, dtype=torch.float64)
        B = (G * U).sum(dim=1, dtype=torch.float64)
        if self.decay is not None:
            U = U.double()
            A = A + (U * (self.decay * U)).sum(dim=1)
            B = B + (U * (self.decay * self.theta)).sum(dim=1)
        return A.tolist(), B.tolist()


@dataclass
class _Plan:
    """One form: its directions (the value's, and eta's when param groups use different lr) and what
    its result reports besides the value."""

    form: str
    directions: list[_Direction]
    first: int = 0
    eta: float | None = None  # the value's scale to eta * value (None: eta's own direction, or raw)
    optimizer: str | None = None
    step: int | None = None
    lr: tuple[float, ...] | None = None
    constant: float | None = None
    no_step: bool = False  # the update ratio of a step of lr 0: 0

    @classmethod
    def of(cls, form: str, model: nn.Module, layout: ParamLayout, optimizer, theta: Tensor, step, lr) -> "_Plan":
        if form == "raw":
            return cls(form, [_Direction(lambda g: g, None, theta)])
        if form == "update":  # needs no P: defined before an adaptive optimizer's first step too
            nxt = NextStep(optimizer, model, layout)
            decay = _nonzero(coupled_decay_diagonal(optimizer, model, layout.names).to(theta.device))
            count = state_count(optimizer)
            return cls(form, [_Direction(nxt.step, decay, theta.double(), pure=False)], eta=1.0,
                       optimizer=_name(optimizer),
                       step=None if count is None else count + 1, lr=nxt.lr, constant=UPDATE_BALANCE,
                       no_step=not any(nxt.lr))
        setting = edge_setting(optimizer, model, step, lr=lr)  # ValueError when P or the threshold cannot be read
        decay = _nonzero(setting.decay.to(theta.device))
        inverse = inverse_preconditioner(optimizer, model, layout)
        w_theta = None if decay is None else (decay * theta.double()).to(theta)

        def preconditioned(g: Tensor) -> Tensor:
            return inverse(g if w_theta is None else g + w_theta)
        directions = [_Direction(preconditioned, decay, theta.double())]
        rates = setting.lr
        eta: float | None = rates[0]
        if len(set(rates)) > 1:  # eta * BS_P needs D = diag(lr_g / P): a direction of its own
            rate_of = {id(group): rate for group, rate in zip(optimizer.param_groups, rates)}
            lr_diag = group_diagonal(optimizer, model, lambda group: rate_of[id(group)]).to(theta)
            directions.append(_Direction(lambda g: lr_diag * preconditioned(g), decay, theta.double()))
            eta = None
        return cls(form, directions, eta=eta, optimizer=setting.optimizer, step=setting.step, lr=rates,
                   constant=setting.constant)

    def result(self, sums: _Sums, batch_size: int, tol: float) -> BatchSharpness:
        value, stderr = sums.estimate(self.first)
        converged = sums.settled(self.first, tol)
        if self.form == "raw":
            return BatchSharpness(self.form, value, stderr, sums.samples, batch_size, converged)
        if self.no_step:
            value, stderr, converged = 0.0, 0.0, True
        if self.eta is not None:
            eta_value, eta_stderr = self.eta * value, abs(self.eta) * stderr
        else:
            eta_value, eta_stderr = sums.estimate(self.first + 1)
            converged = converged and sums.settled(self.first + 1, tol)
        ratio = eta_value / self.constant if math.isfinite(eta_value) else math.nan
        return BatchSharpness(self.form, value, stderr, sums.samples, batch_size, converged, self.optimizer,
                              self.step, self.lr, eta_value, eta_stderr, self.constant, ratio)


def _nonzero(decay: Tensor) -> Tensor | None:
    return decay if bool(torch.any(decay != 0)) else None


def _name(optimizer: torch.optim.Optimizer) -> str:
    """The registry's name of the optimizer's first group (its torch class name when the registry lacks it)."""
    try:
        return identify_group(optimizer, optimizer.param_groups[0], float(optimizer.param_groups[0]["lr"]))[0]
    except ValueError:
        return type(optimizer).__name__


def _number_plans(plans: Sequence[_Plan]) -> None:
    first = 0
    for plan in plans:
        plan.first = first
        first += len(plan.directions)


def _full_batch(model: nn.Module, loss_fn: LossFn, data: Any, directions: Sequence[_Direction]) -> _Sums:
    """b = N: the one term, from the full-batch gradient and one product per direction (exact, stderr 0)."""
    op = hessian_operator(model, loss_fn, data)
    g = op.start_direction()
    sums = _Sums(len(directions), exact=True)
    for j, d in enumerate(directions):
        u = d.along(g[None])[0].to(g)
        sums.add(j, *d.pairs(g[None], u[None], op.matvec(u)[None]))
    return sums


def _sampled(population: Population, curvature: BatchCurvature, batch_size: int,
             directions: Sequence[_Direction], plans: Sequence[_Plan], samples: int, tol: float,
             seed: int) -> _Sums:
    """Batches until every form's estimate meets ``tol`` (after :data:`MIN_SAMPLES`) or ``samples`` are drawn."""
    generator = torch.Generator().manual_seed(seed)
    sums = _Sums(len(directions))
    alongs = [d.along for d in directions]
    pure = all(d.pure for d in directions)
    group = curvature.group_size(batch_size, len(directions))
    watched = [j for plan in plans for j in range(plan.first, plan.first + len(plan.directions))]
    while sums.samples < samples:
        k = min(_next_group(sums, watched, tol, group), samples - sums.samples)
        batches = torch.stack([population.draw(generator, batch_size) for _ in range(k)])
        if group == 1:  # alone: large batches, or a batch shared by the ranks of a Shard
            G, U, HU = (t[None] for t in curvature.one(*population.members(batches[0]), batch_size, alongs))
        else:
            G, U, HU = curvature.many(*population.stacked(batches), alongs, pure=pure)
        for j, d in enumerate(directions):
            sums.add(j, *d.pairs(G, U[:, j], HU[:, j]))
        if all(sums.settled(j, tol) for j in watched):
            break
    return sums


def _next_group(sums: _Sums, watched: Sequence[int], tol: float, largest: int) -> int:
    """How many batches to compute together next (at most ``largest``): :data:`MIN_SAMPLES` first, then the
    batches the current stderrs say are still missing, k (stderr / (tol |R|))^2 - k, with a margin of a quarter
    and two batches (a stderr from few batches is itself uncertain, and each vectorised group has a fixed cost
    of a few batches), so that one more group usually suffices."""
    if sums.samples < MIN_SAMPLES:
        return min(largest, MIN_SAMPLES - sums.samples)
    missing = 1.0
    for j in watched:
        value, stderr = sums.estimate(j)
        if not (math.isfinite(value) and math.isfinite(stderr)) or value == 0:
            return largest
        missing = max(missing, sums.samples * ((stderr / (tol * abs(value))) ** 2 - 1))
    return int(min(largest, math.ceil(1.25 * missing) + 2))


def _check_same_on_every_rank(group: Any, **values: int) -> None:
    """ValueError naming the first of ``values`` that differs between the ranks of ``group``."""
    if group is None:
        return
    t = torch.tensor([float(v) for v in values.values()] + [-float(v) for v in values.values()], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    for i, name in enumerate(values):
        if t[i] != -t[i + len(values)]:
            raise ValueError(f"{name} must be the same on every rank of a deep.Shard (the ranks draw the same "
                             f"batches); got values from {-float(t[i + len(values)]):g} to {float(t[i]):g}")


def batch_seed(seed: int, step: int) -> int:
    """A seed for the batches measured at ``step`` of a run seeded ``seed``, independent of the run's own
    batches and of other steps' (numpy's SeedSequence of (seed, step))."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0])

