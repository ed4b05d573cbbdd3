"""The optimizer registry: every fact about an optimizer, written once.

Each :class:`OptimizerSpec` says what the rest of the package needs to know about one optimizer:

* its hyperparameters (names of :mod:`aeos_theory.hyperparams`) and torch's defaults for them;
* ``momentum``: the hyperparameter that plays "beta" in its threshold formula (None for GD);
* ``decay``: how ``weight_decay`` acts, ``"coupled"`` (L2 added to the gradient, g + wd x) or
  ``"decoupled"`` (AdamW: x <- (1 - eta wd) x before the step);
* ``preconditioner``: the rule by which its diagonal P is read from the torch state (``"v_hat"``:
  sqrt(v / (1 - beta2^t)) + eps from ``exp_avg_sq``; ``"v_hat_nadam"``, the same in NAdam's rounding;
  ``"square_avg"``: sqrt(s) + eps from RMSprop's ``square_avg``), or None when P = I (SGD and its
  momentum variants); ``deep.curvature.preconditioners`` implements the rules;
* ``label``: the optimizer's name in figures and messages;
* ``torch_class``, ``torch_arguments`` and ``torch_hypers``: how to build the ``torch.optim`` object from
  hyperparameters, and how to read the hyperparameters back from one of its param groups (data only:
  this module imports no torch); ``torch_aliases``: other classes that run the same update;
* ``update`` and ``coefficients``: the update matrix M_t(lambda) of the t-th step on one
  eigen-direction, with P frozen, and the step-dependent coefficients it contains (Adam's bias
  correction, NAdam's momentum schedule, SGD's first step), which :mod:`.stability` turns into the exact
  threshold at any step;
* ``constant``: the closed form of that threshold, eta * lambda* of M_t as a function of the
  hyperparameters and the step coefficients (plain arithmetic: floats, numpy arrays and sympy symbols),
  which :mod:`.thresholds` evaluates without sympy; ``formulas`` and ``step_formula``: lambda* as the
  derivation prints it (settled, by the hyperparameters set to 0; and the t-th update in the coefficient
  symbols), for ``aeos threshold``; ``crossing``: how the roots of M_t leave the unit disk there.  The
  tests check all four against the sympy derivation of ``update``, for every entry;
* ``kernel``: the integer code of its step in the ``sims`` numba kernels (None: not simulated yet);
* ``torch_module``: where ``torch_class`` lives (``torch.optim``, or ``pytorch_optimizer`` for Shampoo and SOAP);
* ``count``: where ``deep`` reads the step t of the update just taken (``"state"``: ``state["step"]``;
  ``"group"``: the param group's ``step``; ``"group_updates"``: that minus one, SOAP's first step only
  building its eigenbasis; None: the class keeps no count, as SGD and Muon);
* ``step_factor``: for Adafactor and Muon, whose step size differs per tensor (relative step and clipping;
  the shape adjustment), the rule by which ``deep`` reads that factor k into the step size D = eta k / P
  (their ``constant`` is at k = 1); None: the step size is eta;
* ``shift``: the hyperparameters added to the curvature as a coupled decay W (``weight_decay`` when
  ``decay`` is coupled; ASGD's ``lambd`` too), and ``eta_in_coefficients``: the step coefficients read
  eta (ASGD's schedule), so the threshold needs it.

The optimizers beyond the paper's seven are written in :mod:`aeos_theory.zoo`, with the classes that are
refused (:data:`REFUSED`, the reason in one line).  `sims`, `deep` and `paper_figures` derive all their
tables from :data:`OPTIMIZERS`: adding an optimizer is one entry here plus its step in ``sims.updates``.  The module imports no sympy: the
symbols :data:`LAMBDA`, :data:`SYMBOLS` and :data:`STEP_SYMBOLS` are made on first use.

**Update matrices.**  On one eigen-direction of L(x) = 1/2 h x^2 with P frozen, the t-th update of each
optimizer is a linear map s_{t+1} = M_t(lambda) s_t on its state s = (x, buffer).  ``lambda`` is an
eigenvalue of P^-1 (H + wd I) for coupled weight decay (the curvature of the objective the optimizer
descends, L + wd/2 |x|^2, in P's metric) and of P^-1 H otherwise; with coupled decay this is exact for
any diagonal P, because the decay is part of the gradient the optimizer preconditions.  AdamW's
decoupled decay multiplies x by (1 - eta wd) before the step, as ``torch.optim.AdamW`` does; it
commutes with P^-1 H, so its threshold on P^-1 H is exact for any P too.
"""

from __future__ import annotations

import functools
import math
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from aeos_base import checks
from aeos_theory import zoo
from aeos_theory.hyperparams import HYPERS
from aeos_theory.zoo import REFUSED

if TYPE_CHECKING:
    import sympy as sp

#: The largest step t whose update the package describes (t must convert to a float64).
MAX_STEP = 10**300

UpdateMap = Callable[["sp.Expr", Mapping[str, Any]], "list[list[Any]]"]  # the rows of M_t(lambda)
Coefficients = Callable[["int | None", Mapping[str, Any]], dict]
ClosedForm = Callable[[Mapping[str, Any]], Any]


@functools.lru_cache(maxsize=None)
def _symbols() -> dict[str, Any]:
    """The sympy symbols of the derivations, made (and sympy imported) on first use."""
    import sympy as sp

    return {
        # the curvature: an eigenvalue of P^-1 (H + wd I) (coupled decay) or of P^-1 H
        "LAMBDA": sp.Symbol("lambda", positive=True),
        # one per hyperparameter name (eta > 0, the others >= 0)
        "SYMBOLS": {name: sp.Symbol(name, positive=True) if not hyper.low_inclusive
                    else sp.Symbol(name, nonnegative=True) for name, hyper in HYPERS.items()},
        # the step-dependent coefficients of the update matrices (their meaning: each spec's coefficients)
        "STEP_SYMBOLS": {
            "k": sp.Symbol("k_t", positive=True),    # Adam's bias correction 1 / (1 - beta1^t)
            "a": sp.Symbol("a_t", nonnegative=True),  # SGD: factor on the old momentum buffer
            "u": sp.Symbol("u_t", positive=True),     # SGD: factor on the gradient in the buffer
            "c1": sp.Symbol("c1_t", positive=True),   # NAdam: (1 - mu_t) / (1 - Pi_t)
            "c2": sp.Symbol("c2_t", nonnegative=True),  # NAdam: mu_{t+1} / (1 - Pi_t mu_{t+1})
            "s": sp.Symbol("s_t", positive=True),     # Adagrad, ASGD: the divisor of the lr at step t
            "r": sp.Symbol("r_t", positive=True),     # RAdam: the rectification r_t (1 in the warm phase)
        },
    }


def __getattr__(name: str) -> Any:
    """``LAMBDA`` (the curvature symbol), ``SYMBOLS`` (hyperparameter name -> symbol) and ``STEP_SYMBOLS``
    (coefficient name -> symbol ``k_t``, ``a_t``, ``u_t``, ``c1_t``, ``c2_t``, ``s_t``, ``r_t``), made on first use so that
    importing the registry does not import sympy."""
    if name in ("LAMBDA", "SYMBOLS", "STEP_SYMBOLS"):
        return _symbols()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of the package (see the module docstring for the meaning of each field)."""

    name: str
    label: str
    doc: str
    hypers: tuple[str, ...]
    defaults: Mapping[str, float]
    momentum: str | None
    decay: str
    preconditioner: str | None
    torch_class: str
    torch_arguments: Callable[[Mapping[str, float]], dict] = field(repr=False)
    torch_hypers: Callable[[Mapping[str, Any]], dict] = field(repr=False)
    update: UpdateMap = field(repr=False)
    coefficients: Coefficients = field(repr=False)
    constant: ClosedForm = field(repr=False)
    formulas: Mapping[tuple[str, ...], str] = field(repr=False)
    step_formula: str = field(repr=False)
    crossing: str = "z = -1"
    kernel: int | None = None
    torch_aliases: tuple[str, ...] = ()
    torch_module: str = "torch.optim"
    count: str | None = "state"
    step_factor: str | None = None
    curvature_shift: tuple[str, ...] | None = None
    eta_in_coefficients: bool = False

    @property
    def adaptive(self) -> bool:
        """True when the optimizer divides its step by an adaptive P (the Adam family, RMSProp, Adagrad, ...;
        Muon, Shampoo and SOAP, whose P is not diagonal)."""
        return self.preconditioner is not None

    @property
    def simulated(self) -> bool:
        """True when ``sims`` has a numba kernel for its step."""
        return self.kernel is not None

    @property
    def shift(self) -> tuple[str, ...]:
        """The hyperparameters whose sum is the coupled decay W added to H (module docstring)."""
        if self.curvature_shift is not None:
            return self.curvature_shift
        return ("weight_decay",) if self.decay == "coupled" else ()

    def coupled_decay(self, hyper: Mapping[str, float]) -> float:
        """W: the sum of the ``shift`` hyperparameters in ``hyper`` (0 for those absent)."""
        return float(sum(hyper.get(name, 0.0) for name in self.shift))

    def matrix(self) -> sp.Matrix:
        """M_t(lambda) in the package's symbols: :data:`LAMBDA`, :data:`SYMBOLS`, :data:`STEP_SYMBOLS`."""
        import sympy as sp

        symbols = _symbols()
        return sp.Matrix(self.update(symbols["LAMBDA"], {**{name: symbols["SYMBOLS"][name] for name in self.hypers},
                                                         **symbols["STEP_SYMBOLS"]}))

    def formula(self, hyper: Mapping[str, object]) -> str:
        """lambda* of the settled update as the derivation prints it, ``str(derive(name))``, with the
        hyperparameters that are 0 in ``hyper`` set to 0 (a zero can change the step: heavy ball without
        momentum takes GD's)."""
        zeroable = {name for key in self.formulas for name in key}
        return self.formulas[tuple(name for name in self.hypers if name in zeroable and hyper.get(name) == 0)]

    def validate(self, hyper: Mapping[str, object], *, require: tuple[str, ...] = ("eta",)) -> dict[str, float]:
        """``hyper`` checked and completed with this optimizer's defaults.

        ValueError for an argument the optimizer does not take, a missing required one, a value outside
        its range (the message names the argument and the range), or eta * weight_decay >= 1 (decay alone
        would flip the sign of x).
        """
        unknown = sorted(set(hyper) - set(self.hypers))
        if unknown:
            raise ValueError(f"optimizer {self.name!r} takes hyperparameters {', '.join(self.hypers)}; "
                             f"unknown: {', '.join(unknown)}")
        values: dict[str, float] = {}
        for name in self.hypers:
            if hyper.get(name) is not None:
                values[name] = HYPERS[name].check(hyper[name])
            elif name in self.defaults:
                values[name] = self.defaults[name]
            elif name in require:
                raise ValueError(f"{name} is required for optimizer {self.name!r} ({HYPERS[name].range_text()})")
        eta, wd = values.get("eta"), values.get("weight_decay", 0.0)
        if eta is not None and eta * wd >= 1.0:
            raise ValueError(f"weight_decay must satisfy 0 <= weight_decay < 1/eta = {1.0 / eta:g}, got {wd!r}")
        return values

    def step_coefficients(self, step: int | None, hyper: Mapping[str, Any]) -> dict:
        """The coefficients of M_t at ``step`` t >= 1 (None: settled, t -> infinity) for ``hyper``.

        t is at most ``MAX_STEP`` = 10^300, so that t converts to a float64."""
        if step is not None:
            step = checks.integer("step", step, low=1, high=MAX_STEP)
        return self.coefficients(step, hyper)


# ----------------------------------------------------------------------------- update matrices M_t
# Each gives the rows of M_t(lambda) (sympy makes them a Matrix), followed by the closed form of its
# threshold constant eta * lambda*: the stability boundary of M_t, where a real root of
# chi(z) = det(z I - M_t) = z^2 - tr(M_t) z + det(M_t) crosses z = -1, i.e. 1 + tr(M_t) + det(M_t) = 0.
# The closed forms use + - * / only, so they evaluate floats, numpy arrays and sympy symbols alike.
def _gd(lam, h):
    """x <- x - eta lambda x."""
    return [[1 - h["eta"] * lam]]


def _gd_constant(h):
    """eta lambda* = 2: the root 1 - eta lambda reaches -1."""
    return 2


def _heavy_ball(lam, h):
    """b <- a_t b + u_t lambda x;  x <- x - eta b   (state (x, b))."""
    eta, a, u = h["eta"], h["a"], h["u"]
    return [[1 - eta * u * lam, -eta * a], [u * lam, a]]


def _heavy_ball_constant(h):
    """eta lambda* = 2 (1 + a_t) / u_t:  chi(-1) = 2 + 2 a_t - eta u_t lambda."""
    return 2 * (1 + h["a"]) / h["u"]


def _nesterov(lam, h):
    """b <- a_t b + lambda x;  x <- x - eta (lambda x + beta b)   (torch ``nesterov=True``)."""
    eta, beta, a = h["eta"], h["beta"], h["a"]
    return [[1 - eta * (1 + beta) * lam, -eta * beta * a], [lam, a]]


def _nesterov_constant(h):
    """eta lambda* = 2 (1 + a_t) / (1 + a_t + beta):  chi(-1) = 2 + 2 a_t - eta (1 + a_t + beta) lambda."""
    return 2 * (1 + h["a"]) / (1 + h["a"] + h["beta"])


def _adam(lam, h):
    """m <- beta1 m + (1 - beta1) lambda x;  x <- x - eta k_t m   (k_t = 1 / (1 - beta1^t))."""
    eta, b1, k = h["eta"], h["beta1"], h["k"]
    return [[1 - eta * k * (1 - b1) * lam, -eta * k * b1], [(1 - b1) * lam, b1]]


def _adam_constant(h):
    """eta lambda* = 2 (1 + beta1) / ((1 - beta1) k_t):  chi(-1) = 2 + 2 beta1 - eta k_t (1 - beta1) lambda."""
    return 2 * (1 + h["beta1"]) / ((1 - h["beta1"]) * h["k"])


def _adamw(lam, h):
    """As Adam, after the decoupled decay x <- (1 - eta wd) x (torch applies eta, not eta k_t, to it)."""
    eta, b1, k, wd = h["eta"], h["beta1"], h["k"], h["weight_decay"]
    return [[1 - eta * wd - eta * k * (1 - b1) * lam, -eta * k * b1], [(1 - b1) * lam, b1]]


def _adamw_constant(h):
    """eta lambda* = (1 + beta1)(2 - eta wd) / ((1 - beta1) k_t):
    chi(-1) = (1 + beta1)(2 - eta wd) - eta k_t (1 - beta1) lambda; the one constant that depends on eta."""
    b1 = h["beta1"]
    return (1 + b1) * (2 - h["eta"] * h["weight_decay"]) / ((1 - b1) * h["k"])


def _rmsprop(lam, h):
    """b <- beta b + lambda x;  x <- x - eta b   (torch's RMSprop momentum buffer starts at zero)."""
    eta, beta = h["eta"], h["beta"]
    return [[1 - eta * lam, -eta * beta], [lam, beta]]


def _rmsprop_constant(h):
    """eta lambda* = 2 (1 + beta):  chi(-1) = 2 + 2 beta - eta lambda."""
    return 2 * (1 + h["beta"])


def _nadam(lam, h):
    """m <- beta1 m + (1 - beta1) lambda x;  x <- x - eta c1_t lambda x - eta c2_t m   (torch ``NAdam``)."""
    eta, b1, c1, c2 = h["eta"], h["beta1"], h["c1"], h["c2"]
    return [[1 - eta * (c1 + c2 * (1 - b1)) * lam, -eta * c2 * b1], [(1 - b1) * lam, b1]]


def _nadam_constant(h):
    """eta lambda* = 2 (1 + beta1) / ((1 + beta1) c1_t + (1 - beta1) c2_t):
    chi(-1) = 2 + 2 beta1 - eta ((1 + beta1) c1_t + (1 - beta1) c2_t) lambda."""
    b1 = h["beta1"]
    return 2 * (1 + b1) / ((1 + b1) * h["c1"] + (1 - b1) * h["c2"])


# ----------------------------------------------------------------------------- step coefficients
# Each works on floats (thresholds) and on sympy symbols (derivations): t is an int, or None for the
# settled value t -> infinity.
def _none(t, h):
    return {}


def _sgd_momentum(t, h):
    """a_t, u_t of torch's SGD: the buffer starts as b_1 = G (t = 1: a = 0, u = 1, the step of GD), and
    with beta = 0 the momentum branch is skipped, so dampening does nothing; otherwise a = beta and
    u = 1 - dampening (heavy ball) or 1 (Nesterov)."""
    if t == 1 or h["beta"] == 0:
        return {"a": 0, "u": 1}
    return {"a": h["beta"], "u": 1 - h.get("dampening", 0)}


def _adam_bias(t, h):
    """k_t = 1 / (1 - beta1^t): the step on the raw EMA m is eta k_t; k -> 1 as t grows."""
    return {"k": 1} if t is None else {"k": 1 / (1 - h["beta1"] ** t)}


def _nadam_schedule(t, h):
    """torch's NAdam: mu_s = beta1 (1 - 0.5 * 0.96^(s psi)), Pi_t = mu_1 ... mu_t;
    c1_t = (1 - mu_t) / (1 - Pi_t), c2_t = mu_{t+1} / (1 - Pi_t mu_{t+1}).  Settled (psi > 0): mu -> beta1,
    Pi -> 0, so c1 = 1 - beta1, c2 = beta1; with psi = 0, mu stays beta1 / 2."""
    b1, psi = h["beta1"], h["momentum_decay"]

    def mu(s):
        return b1 * (1 - 0.5 * 0.96 ** (s * psi))

    if t is None:
        settled = b1 / 2 if psi == 0 else b1
        return {"c1": 1 - settled, "c2": settled}
    if isinstance(b1, float) and isinstance(psi, float):
        product = _mu_product(b1, psi, t)
    else:  # symbols: the product written out
        product = 1
        for s in range(1, t + 1):
            product = product * mu(s)
    return {"c1": (1 - mu(t)) / (1 - product), "c2": mu(t + 1) / (1 - product * mu(t + 1))}


#: Steps t whose products Pi_t are multiplied out in order, as torch does, and kept (per (beta1, psi),
#: for at most ``_KEPT`` pairs); later steps use the closed form of :func:`_mu_product`.
_IN_ORDER = 100_000
_KEPT = 8
_NEGLIGIBLE = 2.0**-60
_PRODUCTS: dict[tuple[float, float], array] = {}


def _mu_product(b1: float, psi: float, t: int) -> float:
    """Pi_t = mu_1 ... mu_t in float64, for any t >= 1, in O(1) time once the prefix is built.

    For t <= N = ``_IN_ORDER`` multiplied in order as torch does, the prefixes kept (a run's thresholds
    at increasing t cost O(t) in all).  The prefix stops growing once Pi_t < 2^-60, and every later Pi_t
    is returned as 0: in float64 it leaves 1 - Pi_t and 1 - Pi_t mu_{t+1} at exactly 1, so the step's
    coefficients are the same (as Pi_t <= beta1^t, for beta1 <= 0.999 this happens by t = 41600 < N).
    For t > N, with q = 0.96^psi and the q-Pochhammer symbol (x; q)_inf = prod_{j >= 0} (1 - x q^j),

        Pi_t = Pi_N beta1^(t - N) prod_{s=N+1}^{t} (1 - q^s / 2)
             = Pi_N beta1^(t - N) (q^(N+1) / 2; q)_inf / (q^(t+1) / 2; q)_inf,

    evaluated in logarithms (:func:`_log_pochhammer`).
    """
    key = (b1, psi)
    if key not in _PRODUCTS and len(_PRODUCTS) >= _KEPT:
        del _PRODUCTS[next(iter(_PRODUCTS))]  # the oldest pair: memory stays bounded
    products = _PRODUCTS.setdefault(key, array("d", [1.0]))
    while len(products) <= min(t, _IN_ORDER) and products[-1] >= _NEGLIGIBLE:
        s = len(products)
        products.append(products[-1] * (b1 * (1 - 0.5 * 0.96 ** (s * psi))))
    if t < len(products):
        return products[t]
    if products[-1] < _NEGLIGIBLE:
        return 0.0
    n, log_q = _IN_ORDER, psi * math.log(0.96)
    log_tail = ((t - n) * math.log(b1) + _log_pochhammer(0.5 * math.exp((n + 1) * log_q), log_q)
                - _log_pochhammer(0.5 * math.exp((t + 1) * log_q), log_q))
    return products[n] * math.exp(log_tail)


def _log_pochhammer(x: float, log_q: float) -> float:
    """log (x; q)_inf = sum_{j >= 0} log(1 - x q^j) = -sum_{k >= 1} x^k / (k (1 - q^k)), for 0 <= x < 1
    and q = exp(log_q) < 1; the series converges like x^k."""
    total, k, power = 0.0, 1, x
    while power > 0.0:
        term = power / (k * -math.expm1(k * log_q))
        total -= term
        if term <= 1e-17 * abs(total):
            break
        k, power = k + 1, power * x
    return total


# ----------------------------------------------------------------------------- torch arguments
def _number(value: Any) -> float:
    return float(value.item()) if hasattr(value, "item") else float(value)


def _sgd_arguments(h: Mapping[str, float]) -> dict:
    return {"lr": h["eta"], "momentum": h.get("beta", 0.0), "dampening": h.get("dampening", 0.0),
            "weight_decay": h["weight_decay"], "nesterov": False}


def _sgd_hypers(group: Mapping[str, Any]) -> dict:
    return {"eta": _number(group["lr"]), "beta": _number(group["momentum"]),
            "dampening": _number(group["dampening"]), "weight_decay": _number(group["weight_decay"])}


def _gd_hypers(group: Mapping[str, Any]) -> dict:
    return {"eta": _number(group["lr"]), "weight_decay": _number(group["weight_decay"])}


def _nesterov_arguments(h: Mapping[str, float]) -> dict:
    # torch refuses nesterov=True without momentum; beta = 0 is exactly gd
    return {"lr": h["eta"], "momentum": h["beta"], "dampening": 0.0, "nesterov": h["beta"] > 0,
            "weight_decay": h["weight_decay"]}


def _nesterov_hypers(group: Mapping[str, Any]) -> dict:
    return {"eta": _number(group["lr"]), "beta": _number(group["momentum"]),
            "weight_decay": _number(group["weight_decay"])}


def _adam_arguments(h: Mapping[str, float]) -> dict:
    args = {"lr": h["eta"], "betas": (h["beta1"], h["beta2"]), "eps": h["eps"], "weight_decay": h["weight_decay"]}
    if "momentum_decay" in h:
        args["momentum_decay"] = h["momentum_decay"]
    return args


def _adam_hypers(group: Mapping[str, Any]) -> dict:
    hyper = {"eta": _number(group["lr"]), "beta1": _number(group["betas"][0]), "beta2": _number(group["betas"][1]),
             "eps": _number(group["eps"]), "weight_decay": _number(group["weight_decay"])}
    if "momentum_decay" in group:
        hyper["momentum_decay"] = _number(group["momentum_decay"])
    return hyper


def _rmsprop_arguments(h: Mapping[str, float]) -> dict:
    return {"lr": h["eta"], "alpha": h["beta2"], "eps": h["eps"], "momentum": h["beta"],
            "weight_decay": h["weight_decay"]}


def _rmsprop_hypers(group: Mapping[str, Any]) -> dict:
    return {"eta": _number(group["lr"]), "beta": _number(group["momentum"]), "beta2": _number(group["alpha"]),
            "eps": _number(group["eps"]), "weight_decay": _number(group["weight_decay"])}


_ADAM_HYPERS = ("eta", "beta1", "beta2", "eps", "weight_decay")
_ADAM_DEFAULTS = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
_SGD = {"torch_class": "SGD", "preconditioner": None, "decay": "coupled", "count": None}
_ADAM = {"momentum": "beta1", "torch_arguments": _adam_arguments, "torch_hypers": _adam_hypers}

#: Settled lambda* printed when only beta1 (and for AdamW weight_decay) may be 0: the Adam family's formulas.
_ADAM_FORMULAS = {(): "2*(beta1 + 1)/(eta*(1 - beta1))", ("beta1",): "2/eta"}
#: The stored formulas of the optimizers of aeos_theory.zoo, as the derivation prints them (checked by the tests).
_FORMULAS: dict[str, dict[tuple[str, ...], str]] = {
    "adagrad": {(): "oo", ("lr_decay",): "2/eta"},  # lr decay > 0: the lr decays to 0, stable at any curvature
    "asgd": {(): "oo", ("lambd",): "2/eta", ("decay_power",): "2/eta", ("lambd", "decay_power"): "2/eta"},
    "adafactor": {(): "-weight_decay + 2/eta", ("weight_decay",): "2/eta"},
    "muon": {(): "-weight_decay*(beta + 1)/((1 - beta)*(2*beta + 1)) + 2*(beta + 1)/(eta*(1 - beta)*(2*beta + 1))",
             ("beta",): "-weight_decay + 2/eta", ("weight_decay",): "2*(beta + 1)/(eta*(1 - beta)*(2*beta + 1))",
             ("beta", "weight_decay"): "2/eta"},
    "muon_plain": {(): "-weight_decay*(beta + 1)/(1 - beta) + 2*(beta + 1)/(eta*(1 - beta))",
                   ("beta",): "-weight_decay + 2/eta", ("weight_decay",): "2*(beta + 1)/(eta*(1 - beta))",
                   ("beta", "weight_decay"): "2/eta"},
    "soap": {(): "(beta1 + 1)*(-eta*weight_decay + 2)/(eta*(1 - beta1)*(-eta*weight_decay + 1))",
             ("beta1",): "(-eta*weight_decay + 2)/(eta*(-eta*weight_decay + 1))",
             ("weight_decay",): "2*(beta1 + 1)/(eta*(1 - beta1))", ("beta1", "weight_decay"): "2/eta"},
}
_STEP_FORMULAS: dict[str, str] = {
    "adagrad": "2*s_t/eta", "asgd": "2*s_t/eta", "radam": "2*(beta1 + 1)/(eta*k_t*r_t*(1 - beta1))",
    "adafactor": "-weight_decay/k_t + 2/(eta*k_t)",
    "muon": "-weight_decay*(beta + 1)/(k_t*(1 - beta)*(2*beta + 1)) + 2*(beta + 1)/(eta*k_t*(1 - beta)*(2*beta + 1))",
    "muon_plain": "-weight_decay*(beta + 1)/(k_t*(1 - beta)) + 2*(beta + 1)/(eta*k_t*(1 - beta))",
    "soap": "(beta1 + 1)*(-eta*weight_decay + 2)/(eta*k_t*(1 - beta1)*(-eta*weight_decay + 1))",
}

OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec("gd", "GD", "gradient descent: x <- x - eta g", ("eta", "weight_decay"), {"weight_decay": 0.0},
                      momentum=None, torch_arguments=_sgd_arguments, torch_hypers=_gd_hypers, update=_gd,
                      coefficients=_none, constant=_gd_constant, formulas={(): "2/eta"}, step_formula="2/eta",
                      kernel=0, **_SGD),
        OptimizerSpec("heavy_ball", "heavy ball",
                      "SGD(momentum=beta, dampening): b <- beta b + (1 - dampening) g; x <- x - eta b",
                      ("eta", "beta", "dampening", "weight_decay"), {"beta": 0.9, "dampening": 0.0, "weight_decay": 0.0},
                      momentum="beta", torch_arguments=_sgd_arguments, torch_hypers=_sgd_hypers,
                      update=_heavy_ball, coefficients=_sgd_momentum, constant=_heavy_ball_constant,
                      formulas={(): "2*(beta + 1)/(eta*(1 - dampening))", ("dampening",): "2*(beta + 1)/eta",
                                ("beta",): "2/eta", ("beta", "dampening"): "2/eta"},
                      step_formula="2*(a_t + 1)/(eta*u_t)", kernel=1, **_SGD),
        OptimizerSpec("nesterov", "Nesterov",
                      "SGD(momentum=beta, nesterov=True): b <- beta b + g; x <- x - eta (g + beta b)",
                      ("eta", "beta", "weight_decay"), {"beta": 0.9, "weight_decay": 0.0},
                      momentum="beta", torch_arguments=_nesterov_arguments, torch_hypers=_nesterov_hypers,
                      update=_nesterov, coefficients=_sgd_momentum, constant=_nesterov_constant,
                      formulas={(): "2*(beta + 1)/(eta*(2*beta + 1))", ("beta",): "2/eta"},
                      step_formula="2*(a_t + 1)/(eta*(a_t + beta + 1))", kernel=2, **_SGD),
        OptimizerSpec("adam", "Adam", "Adam: m <- beta1 m + (1 - beta1) g; x <- x - eta m_hat / (sqrt(v_hat) + eps)",
                      _ADAM_HYPERS, _ADAM_DEFAULTS, decay="coupled", preconditioner="v_hat", torch_class="Adam",
                      update=_adam, coefficients=_adam_bias, constant=_adam_constant, formulas=_ADAM_FORMULAS,
                      step_formula="2*(beta1 + 1)/(eta*k_t*(1 - beta1))", kernel=3, **_ADAM),
        OptimizerSpec("adamw", "AdamW", "AdamW: x <- (1 - eta wd) x - eta m_hat / (sqrt(v_hat) + eps)",
                      _ADAM_HYPERS, {**_ADAM_DEFAULTS, "weight_decay": 1e-2}, decay="decoupled",
                      preconditioner="v_hat", torch_class="AdamW", update=_adamw, coefficients=_adam_bias,
                      constant=_adamw_constant,
                      formulas={(): "-weight_decay*(beta1 + 1)/(1 - beta1) + 2*(beta1 + 1)/(eta*(1 - beta1))",
                                ("beta1",): "-weight_decay + 2/eta",
                                ("weight_decay",): _ADAM_FORMULAS[()], ("beta1", "weight_decay"): "2/eta"},
                      step_formula="-weight_decay*(beta1 + 1)/(k_t*(1 - beta1)) + 2*(beta1 + 1)/(eta*k_t*(1 - beta1))",
                      kernel=4, torch_aliases=("Adam",), **_ADAM),
        OptimizerSpec("rmsprop", "RMSProp",
                      "RMSprop(alpha=beta2, momentum=beta): b <- beta b + g / (sqrt(s) + eps); x <- x - eta b",
                      ("eta", "beta", "beta2", "eps", "weight_decay"),
                      {"beta": 0.0, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.0},
                      momentum="beta", decay="coupled", preconditioner="square_avg", torch_class="RMSprop",
                      torch_arguments=_rmsprop_arguments, torch_hypers=_rmsprop_hypers, update=_rmsprop,
                      coefficients=_none, constant=_rmsprop_constant,
                      formulas={(): "2*(beta + 1)/eta", ("beta",): "2/eta"}, step_formula="2*(beta + 1)/eta",
                      kernel=5),
        OptimizerSpec("nadam", "NAdam",
                      "NAdam: x <- x - eta (1 - mu_t)/(1 - Pi_t) g / P - eta mu_{t+1}/(1 - Pi_{t+1}) m / P",
                      (*_ADAM_HYPERS, "momentum_decay"), {**_ADAM_DEFAULTS, "momentum_decay": 4e-3},
                      decay="coupled", preconditioner="v_hat_nadam", torch_class="NAdam", update=_nadam,
                      coefficients=_nadam_schedule, constant=_nadam_constant,
                      formulas={(): "2*(beta1 + 1)/(eta*(1 - beta1)*(2*beta1 + 1))", ("beta1",): "2/eta",
                                ("momentum_decay",): "2*(beta1 + 1)/(eta*(-beta1**2 + beta1 + 1))",
                                ("beta1", "momentum_decay"): "2/eta"},
                      step_formula="2*(beta1 + 1)/(eta*(beta1*c1_t - beta1*c2_t + c1_t + c2_t))", kernel=6, **_ADAM),
        # ------------------------------------------------ beyond the paper's seven (aeos_theory.zoo)
        OptimizerSpec("adagrad", "Adagrad", "Adagrad: x <- x - eta / (1 + (t - 1) lr_decay) g / (sqrt(sum g^2) + eps)",
                      ("eta", "lr_decay", "eps", "weight_decay"), {"lr_decay": 0.0, "eps": 1e-10, "weight_decay": 0.0},
                      momentum=None, decay="coupled", preconditioner="sum", torch_class="Adagrad",
                      torch_arguments=zoo.adagrad_arguments, torch_hypers=zoo.adagrad_hypers,
                      update=zoo.gd_schedule, coefficients=zoo.adagrad_schedule, constant=zoo.gd_schedule_constant,
                      formulas=_FORMULAS["adagrad"], step_formula=_STEP_FORMULAS["adagrad"], kernel=7),
        OptimizerSpec("adamax", "Adamax", "Adamax: x <- x - eta m_hat / u, u = max(beta2 u, |g| + eps)",
                      _ADAM_HYPERS, {**_ADAM_DEFAULTS, "beta2": 0.999}, decay="coupled", preconditioner="exp_inf",
                      torch_class="Adamax", update=_adam, coefficients=_adam_bias, constant=_adam_constant,
                      formulas=_ADAM_FORMULAS, step_formula="2*(beta1 + 1)/(eta*k_t*(1 - beta1))", kernel=8, **_ADAM),
        OptimizerSpec("adadelta", "Adadelta",
                      "Adadelta(rho=beta2): x <- x - eta sqrt(delta + eps) / sqrt(s + eps) g",
                      ("eta", "beta2", "eps", "weight_decay"), {"beta2": 0.9, "eps": 1e-6, "weight_decay": 0.0},
                      momentum=None, decay="coupled", preconditioner="delta_ratio", torch_class="Adadelta",
                      torch_arguments=zoo.adadelta_arguments, torch_hypers=zoo.adadelta_hypers, update=_gd,
                      coefficients=_none, constant=_gd_constant, formulas={(): "2/eta"}, step_formula="2/eta",
                      kernel=9),
        OptimizerSpec("radam", "RAdam",
                      "RAdam: x <- x - eta r_t m_hat / P once rho_t > 5, x <- x - eta m_hat before (P = I)",
                      _ADAM_HYPERS, _ADAM_DEFAULTS, decay="coupled", preconditioner="v_hat_radam", torch_class="RAdam",
                      update=zoo.radam, coefficients=zoo.radam_coefficients, constant=zoo.radam_constant,
                      formulas=_ADAM_FORMULAS, step_formula=_STEP_FORMULAS["radam"], kernel=10, **_ADAM),
        OptimizerSpec("asgd", "ASGD",
                      "ASGD(alpha=decay_power): x <- (1 - lambd eta_t) x - eta_t g, eta_t = eta / (1 + lambd eta (t-1))^alpha",
                      ("eta", "lambd", "decay_power", "weight_decay"),
                      {"lambd": 1e-4, "decay_power": 0.75, "weight_decay": 0.0},
                      momentum=None, decay="coupled", preconditioner=None, torch_class="ASGD",
                      torch_arguments=zoo.asgd_arguments, torch_hypers=zoo.asgd_hypers, update=zoo.gd_schedule,
                      coefficients=zoo.asgd_schedule, constant=zoo.gd_schedule_constant, formulas=_FORMULAS["asgd"],
                      step_formula=_STEP_FORMULAS["asgd"], curvature_shift=("weight_decay", "lambd"),
                      eta_in_coefficients=True, kernel=11),
        OptimizerSpec("adafactor", "Adafactor",
                      "Adafactor: x <- (1 - eta wd) x - eta k g / sqrt(V_hat), V_hat factored, k relative step and clipping",
                      ("eta", "weight_decay"), {"weight_decay": 0.0}, momentum=None, decay="decoupled",
                      preconditioner="factored", torch_class="Adafactor", torch_arguments=zoo.adafactor_arguments,
                      torch_hypers=zoo.adafactor_hypers, update=zoo.decoupled_gd, coefficients=zoo.unit_step,
                      constant=zoo.decoupled_gd_constant, formulas=_FORMULAS["adafactor"],
                      step_formula=_STEP_FORMULAS["adafactor"], step_factor="adafactor"),
        OptimizerSpec("muon", "Muon",
                      "Muon (nesterov): x <- (1 - eta wd) x - eta k NS((1 - beta) g + beta b), b EMA of g",
                      ("eta", "beta", "weight_decay"), {"beta": 0.95, "weight_decay": 0.1}, momentum="beta",
                      decay="decoupled", preconditioner="polar", torch_class="Muon",
                      torch_arguments=zoo.muon_arguments(True), torch_hypers=zoo.muon_hypers, update=zoo.muon,
                      coefficients=zoo.unit_step, constant=zoo.muon_constant, formulas=_FORMULAS["muon"],
                      step_formula=_STEP_FORMULAS["muon"], count=None, step_factor="muon"),
        OptimizerSpec("muon_plain", "Muon (nesterov=False)",
                      "Muon(nesterov=False): x <- (1 - eta wd) x - eta k NS(b), b EMA of g",
                      ("eta", "beta", "weight_decay"), {"beta": 0.95, "weight_decay": 0.1}, momentum="beta",
                      decay="decoupled", preconditioner="polar", torch_class="Muon",
                      torch_arguments=zoo.muon_arguments(False), torch_hypers=zoo.muon_hypers, update=zoo.muon_plain,
                      coefficients=zoo.unit_step, constant=zoo.muon_plain_constant, formulas=_FORMULAS["muon_plain"],
                      step_formula=_STEP_FORMULAS["muon_plain"], count=None, step_factor="muon"),
        OptimizerSpec("shampoo", "Shampoo", "Shampoo (momentum 0): x <- x - eta L^-1/4 G R^-1/4",
                      ("eta", "weight_decay"), {"weight_decay": 0.0}, momentum=None, decay="coupled",
                      preconditioner="kronecker", torch_class="Shampoo", torch_module="pytorch_optimizer",
                      torch_arguments=zoo.shampoo_arguments, torch_hypers=_gd_hypers, update=_gd, coefficients=_none,
                      constant=_gd_constant, formulas={(): "2/eta"}, step_formula="2/eta", count="group"),
        OptimizerSpec("soap", "SOAP", "SOAP: Adam in the eigenbasis of Shampoo's factors, decoupled decay after the step",
                      _ADAM_HYPERS, {"beta1": 0.95, "beta2": 0.95, "eps": 1e-8, "weight_decay": 1e-2},
                      decay="decoupled", preconditioner="eigenbasis", torch_class="SOAP", torch_module="pytorch_optimizer",
                      momentum="beta1", torch_arguments=zoo.soap_arguments, torch_hypers=_adam_hypers, update=zoo.soap,
                      coefficients=_adam_bias, constant=zoo.soap_constant, formulas=_FORMULAS["soap"],
                      step_formula=_STEP_FORMULAS["soap"], count="group_updates"),
    )
}


def get_optimizer(name: str) -> OptimizerSpec:
    """The :class:`OptimizerSpec` called ``name``; ValueError listing the known names otherwise."""
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    return OPTIMIZERS[name]


def validate(optimizer: str, hyper: Mapping[str, object], *, require: tuple[str, ...] = ("eta",)) -> dict[str, float]:
    """``hyper`` for ``optimizer`` checked and completed with its defaults (:meth:`OptimizerSpec.validate`)."""
    return get_optimizer(optimizer).validate(hyper, require=require)


def refusal(torch_class: str) -> str | None:
    """The one-line reason why ``torch_class`` has no edge to measure (Rprop, sign methods, SparseAdam,
    L-BFGS: :data:`aeos_theory.zoo.REFUSED`), or None for a class that is not refused."""
    reason = REFUSED.get(torch_class)
    return None if reason is None else f"optimizer {torch_class} has no edge of stability to measure: {reason}"


def decoupled(torch_class: str, group: Mapping[str, Any]) -> bool:
    """True when the group's weight decay is decoupled: its own flag (``decoupled_weight_decay``, or
    ``weight_decouple`` for ``pytorch_optimizer``), else the class's (AdamW, Muon, Adafactor, SOAP: every
    registry entry of that class decouples)."""
    for flag in ("decoupled_weight_decay", "weight_decouple"):
        if flag in group:
            return bool(group[flag])
    specs = [spec for spec in OPTIMIZERS.values() if spec.torch_class == torch_class]
    return bool(specs) and all(spec.decay == "decoupled" for spec in specs)


def identify(torch_class: str, group: Mapping[str, Any]) -> tuple[str, dict[str, float]]:
    """The package optimizer and validated hyperparameters that a ``torch.optim`` param group runs.

    ``torch_class`` is the class name (``"SGD"``, ``"Adam"``, ..., ``"Shampoo"`` and ``"SOAP"`` of
    ``pytorch_optimizer``) and ``group`` one of its ``param_groups`` (its current lr, betas, ...).  A spec
    matches when building it from the hyperparameters read back gives the group's own arguments (so SGD with
    momentum 0 is ``gd``, with ``nesterov=True`` is ``nesterov``) and its decoupled-decay flag agrees.
    ValueError, in one line, for a refused class (:func:`refusal`: Rprop, SparseAdam, ...) and for a class or
    setting the registry does not describe (``maximize=True``, NAdam with decoupled decay, ...).
    """
    refused = refusal(torch_class)
    if refused is not None:
        raise ValueError(refused)
    if group.get("maximize", False):
        raise ValueError("optimizer param group has maximize=True; the thresholds assume descent")
    for spec in OPTIMIZERS.values():
        if torch_class != spec.torch_class and torch_class not in spec.torch_aliases:
            continue
        if decoupled(torch_class, group) != (spec.decay == "decoupled"):
            continue
        hyper = spec.validate(spec.torch_hypers(group))
        arguments = spec.torch_arguments(hyper)
        if all(_same(group[key], value) for key, value in arguments.items() if key in group):
            return spec.name, hyper
    names = sorted({s.torch_class for s in OPTIMIZERS.values()})
    shown = {k: v for k, v in group.items() if k != "params"}
    raise ValueError(f"optimizer must be a torch.optim {', '.join(names)} in a setting the package describes "
                     f"(optimizers {', '.join(OPTIMIZERS)}); got {torch_class} with {shown}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(b, bool):
        return bool(a) == b
    return _number(a) == float(b)
