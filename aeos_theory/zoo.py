"""Update maps of the optimizers beyond the paper's seven: every other ``torch.optim`` optimizer with a
linearisation in the gradient, and two Kronecker-factored ones from ``pytorch_optimizer``.

The registry (:mod:`aeos_theory.optimizers`) builds its entries from the functions here; each is written
as the paper's seven are there.  On one eigen-direction of P^-1 (H + W) with P frozen (lambda its
eigenvalue, W the coupled decay), the t-th update is s_{t+1} = M_t(lambda) s_t, and eta * lambda* is the
closed form of its stability boundary (checked against the sympy derivation by the tests).  What each
optimizer's P is, and where its schedule goes:

===========  ======================================================================================
Adagrad      x <- x - (eta / s_t) g / P, P = sqrt(sum) + eps.  The lr decay is a step coefficient,
             s_t = 1 + (t - 1) lr_decay (torch's ``clr``): threshold eta * lambda* = 2 s_t, on the
             level eta * S_P with eta the group's lr.  Settled: infinite when lr_decay > 0 (the lr
             decays to 0).
Adamax       Adam's map and threshold, P = ``exp_inf`` = max(beta2 u, |g| + eps) (eps inside the max):
             (2 + 2 beta1) / ((1 - beta1) k_t), k_t = 1 / (1 - beta1^t).
Adadelta     x <- x - eta g / P, P = sqrt(square_avg_t + eps) / sqrt(acc_delta_{t-1} + eps), the ratio of
             its two accumulators frozen (acc_delta as it was *before* the step): threshold 2.
RAdam        rectified phase (rho_t > 5): Adam's map with the step eta k_t r_t, r_t the rectification
             sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)), and
             P = (sqrt(v_t) + eps) / sqrt(1 - beta2^t); warm phase (rho_t <= 5): r_t = 1 and P = I
             (SGD with Adam's bias-corrected EMA momentum).  Threshold (2 + 2 beta1) / ((1 - beta1) k_t r_t).
ASGD         x <- (1 - lambd eta_t) x - eta_t (g + wd x), eta_t = eta / s_t, s_t = (1 + lambd eta (t - 1))^alpha
             (alpha: ``decay_power``): GD at step eta_t on H + (wd + lambd) I, so lambd is a coupled decay
             and the threshold is 2 s_t.  Exact for a constant lr (torch computes eta_t at step t - 1).
Adafactor    x <- (1 - eta wd) x - eta k g / P with P = sqrt(max(V_hat, eps1^2)) (V_hat the factored
             row x column / mean estimate for matrices, the EMA for vectors) and k the relative step and
             RMS clipping of the tensor, k = min(eta, t^-1/2) max(eps2, RMS(x_{t-1})) / (eta max(1, RMS(U_t) / d)).
             k depends on the iterate, not on t: the registry's constant is at k = 1, (2 - eta wd), and
             ``deep`` folds each tensor's k, as the step used it, into the step size D = eta k / P.
Muon         EMA momentum b <- mu b + (1 - mu) g, the matrix fed to the orthogonalisation
             M = (1 - mu) g + mu b (Nesterov, torch's default) or b; frozen, O = P^-1 M with
             P = (M M^T)^1/2 on the smaller side of the weight; x <- (1 - eta wd) x - eta k O with k
             torch's shape adjustment (per tensor: folded into D by ``deep``, k = 1 here).  Thresholds
             (1 + mu)(2 - eta wd) / ((1 - mu)(1 + 2 mu) k) with Nesterov, (1 + mu)(2 - eta wd) / ((1 - mu) k)
             without: NAdam's and AdamW's forms.  The orthogonalisation frozen is an approximation.
Shampoo      (``pytorch_optimizer.Shampoo``, momentum 0) x <- x - eta P^-1 g, P^-1 = L^-1/4 (x) R^-1/4 for
             matrices (the stored ``inv_pre_cond`` factors), (eps I + sum g g^T)^-1/2 for vectors: GD, 2.
SOAP         (``pytorch_optimizer.SOAP``) Adam in the eigenbasis Q of Shampoo's factors:
             P = Q diag(sqrt(v) + eps) Q^T / sqrt(1 - beta2^t), x <- (1 - eta wd)(x - eta k_t P^-1 m):
             (1 + beta1)(2 - eta wd) / ((1 - eta wd)(1 - beta1) k_t), t its count of Adam updates (the
             group's step - 1: SOAP's first step only builds Q).
===========  ======================================================================================

Rprop, sign methods (Lion, signSGD), SparseAdam and L-BFGS have no such linearisation: :data:`REFUSED`
says why, in the one line the package prints when it is handed one.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

#: torch class name -> why its edge cannot be measured (no update linear in the gradient for a frozen P).
REFUSED: dict[str, str] = {
    "Rprop": "its step is -lr_i sign(g_i) with per-coordinate step sizes grown or shrunk by sign changes, "
             "which is not linear in the gradient for any frozen preconditioner",
    "Lion": "its step is the sign of an interpolated momentum, not linear in the gradient for any frozen "
            "preconditioner",
    "SignSGD": "its step is the sign of the gradient (or momentum), not linear in the gradient for any frozen "
               "preconditioner",
    "SparseAdam": "it updates only the rows a sparse gradient touches, so no full-batch update map exists",
    "LBFGS": "its step comes from a line search over a closure and a changing curvature-pair history, not "
             "from a fixed linear update",
}


def _number(value: Any) -> float:
    return float(value.item()) if hasattr(value, "item") else float(value)


def _infinite(symbolic: bool) -> Any:
    """inf, as a float or as sympy's oo."""
    if symbolic:
        import sympy as sp

        return sp.oo
    return math.inf


def _is_symbol(value: Any) -> bool:
    return not isinstance(value, (int, float))


# ----------------------------------------------------------------------------- update matrices M_t
def gd_schedule(lam, h):
    """x <- x - (eta / s_t) lambda x  (Adagrad's lr decay, ASGD's schedule)."""
    return [[1 - h["eta"] / h["s"] * lam]]


def gd_schedule_constant(h):
    """eta lambda* = 2 s_t: the root 1 - eta lambda / s_t reaches -1."""
    return 2 * h["s"]


def radam(lam, h):
    """m <- beta1 m + (1 - beta1) lambda x;  x <- x - eta k_t r_t m  (P = I in the warm phase, r_t = 1)."""
    eta, b1, k, r = h["eta"], h["beta1"], h["k"], h["r"]
    return [[1 - eta * k * r * (1 - b1) * lam, -eta * k * r * b1], [(1 - b1) * lam, b1]]


def radam_constant(h):
    """eta lambda* = 2 (1 + beta1) / ((1 - beta1) k_t r_t):  chi(-1) = 2 + 2 beta1 - eta k_t r_t (1 - beta1) lambda."""
    return 2 * (1 + h["beta1"]) / ((1 - h["beta1"]) * h["k"] * h["r"])


def decoupled_gd(lam, h):
    """x <- (1 - eta wd) x - eta k lambda x  (Adafactor: k the tensor's relative step and clipping)."""
    return [[1 - h["eta"] * h["weight_decay"] - h["eta"] * h["k"] * lam]]


def decoupled_gd_constant(h):
    """eta lambda* = (2 - eta wd) / k:  the root 1 - eta wd - eta k lambda reaches -1."""
    return (2 - h["eta"] * h["weight_decay"]) / h["k"]


def muon(lam, h):
    """b <- beta b + (1 - beta) lambda x;  u = (1 - beta) lambda x + beta b  (Nesterov);
    x <- (1 - eta wd) x - eta k u   (state (x, b), u written out: (1 - beta^2) lambda x + beta^2 b)."""
    eta, b, k, wd = h["eta"], h["beta"], h["k"], h["weight_decay"]
    return [[1 - eta * wd - eta * k * (1 - b * b) * lam, -eta * k * b * b], [(1 - b) * lam, b]]


def muon_constant(h):
    """eta lambda* = (1 + beta)(2 - eta wd) / ((1 - beta)(1 + 2 beta) k):
    chi(-1) = (1 + beta)(2 - eta wd) - eta k (1 - beta)(1 + 2 beta) lambda."""
    b = h["beta"]
    return (1 + b) * (2 - h["eta"] * h["weight_decay"]) / ((1 - b) * (1 + 2 * b) * h["k"])


def muon_plain(lam, h):
    """b <- beta b + (1 - beta) lambda x;  x <- (1 - eta wd) x - eta k b  (``nesterov=False``)."""
    eta, b, k, wd = h["eta"], h["beta"], h["k"], h["weight_decay"]
    return [[1 - eta * wd - eta * k * (1 - b) * lam, -eta * k * b], [(1 - b) * lam, b]]


def muon_plain_constant(h):
    """eta lambda* = (1 + beta)(2 - eta wd) / ((1 - beta) k):  chi(-1) = (1 + beta)(2 - eta wd) - eta k (1 - beta) lambda."""
    b = h["beta"]
    return (1 + b) * (2 - h["eta"] * h["weight_decay"]) / ((1 - b) * h["k"])


def soap(lam, h):
    """m <- beta1 m + (1 - beta1) lambda x;  x <- (1 - eta wd)(x - eta k_t m)  (the decay after the step)."""
    eta, b1, k, q = h["eta"], h["beta1"], h["k"], h["eta"] * h["weight_decay"]
    return [[(1 - q) * (1 - eta * k * (1 - b1) * lam), -(1 - q) * eta * k * b1], [(1 - b1) * lam, b1]]


def soap_constant(h):
    """eta lambda* = (1 + beta1)(2 - eta wd) / ((1 - eta wd)(1 - beta1) k_t):
    chi(-1) = (1 + beta1)(2 - eta wd) - (1 - eta wd) eta k_t (1 - beta1) lambda."""
    b1, q = h["beta1"], h["eta"] * h["weight_decay"]
    return (1 + b1) * (2 - q) / ((1 - q) * (1 - b1) * h["k"])


# ----------------------------------------------------------------------------- step coefficients
def unit_step(t, h):
    """k = 1 at every step: the step factor is the tensor's own (Adafactor, Muon), read by ``deep``."""
    return {"k": 1}


def adagrad_schedule(t, h):
    """s_t = 1 + (t - 1) lr_decay (torch's clr = lr / s_t); settled: inf when lr_decay > 0, else 1."""
    decay = h["lr_decay"]
    if t is None:
        return {"s": 1} if decay == 0 else {"s": _infinite(_is_symbol(decay))}
    return {"s": 1 + (t - 1) * decay}


def asgd_schedule(t, h):
    """s_t = (1 + lambd eta (t - 1))^alpha: torch's eta_t = lr / s_t (computed at step t - 1 from that step's
    lr, so exact for a constant lr); settled: inf when lambd eta alpha > 0, else 1."""
    rate, power = h["lambd"] * h["eta"], h["decay_power"]
    if t is None:
        return {"s": 1} if rate == 0 or power == 0 else {"s": _infinite(_is_symbol(rate) or _is_symbol(power))}
    return {"s": (1 + rate * (t - 1)) ** power}


def radam_rho(t: int, beta2: float) -> tuple[float, float]:
    """(rho_inf, rho_t) of torch's RAdam at step t in float64, in torch's order of operations:
    rho_inf = 2 / (1 - beta2) - 1, rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)."""
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf, rho_inf - 2 * t * beta2**t / (1 - beta2**t)


def radam_rectification(t: int, beta2: float) -> float:
    """r_t: torch's rectification sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)) when
    rho_t > 5 (the rectified phase), 1 otherwise (the warm phase, where RAdam takes SGD's step on m_hat)."""
    rho_inf, rho_t = radam_rho(t, beta2)
    if not rho_t > 5.0:
        return 1.0
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


def radam_rectified_from(beta2: float) -> int | None:
    """The first step t at which torch's RAdam is rectified (rho_t > 5: P = (sqrt(v) + eps)/sqrt(1 - beta2^t)
    from then on); None when it never is (rho_inf = 2/(1 - beta2) - 1 <= 5, i.e. beta2 <= 2/3).  rho_t
    increases with t towards rho_inf, so the phases switch once."""
    if not radam_rho(1, beta2)[0] > 5.0:
        return None
    t = 1
    while not radam_rho(t, beta2)[1] > 5.0:
        t += 1
    return t


def radam_coefficients(t, h):
    """k_t = 1 / (1 - beta1^t) and r_t (:func:`radam_rectification`); settled k = r = 1 (rho_t -> rho_inf,
    where r = 1; with rho_inf <= 5 the warm phase lasts for ever, r = 1 too).  With sympy hyperparameters
    r_t is a Piecewise of the phase."""
    if t is None:
        return {"k": 1, "r": 1}
    b1, b2 = h["beta1"], h["beta2"]
    if not (_is_symbol(b1) or _is_symbol(b2)):
        return {"k": 1 / (1 - b1**t), "r": radam_rectification(t, b2)}
    import sympy as sp

    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
    rect = sp.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    return {"k": 1 / (1 - b1**t), "r": sp.Piecewise((rect, rho_t > 5), (1, True))}


# ----------------------------------------------------------------------------- torch arguments
def adagrad_arguments(h: Mapping[str, float]) -> dict:
    return {"lr": h["eta"], "lr_decay": h["lr_decay"], "eps": h["eps"], "weight_decay": h["weight_decay"]}


def adagrad_hypers(group: Mapping[str, Any]) -> dict:
    return {"eta": _number(group["lr"]), "lr_decay": _number(group["lr_decay"]), "eps": _number(group["eps"]),
            "weight_decay": _number(group["weight_decay"])}


def adadelta_arguments(h: Mapping[str, float]) -> dict:
    return {"lr": h["eta"], "rho": h["beta2"], "eps": h["eps"], "weight_decay": h["weight_decay"]}


def adadelta_hypers(group: Mapping[str, Any]) -> dict:
    return {"eta": _number(group["lr"]), "beta2": _number(group["rho"]), "eps": _number(group["eps"]),
            "weight_decay": _number(group["weight_decay"])}


def asgd_arguments(h: Mapping[str, float]) -> dict:
    return {"lr": h["eta"], "lambd": h["lambd"], "alpha": h["decay_power"], "weight_decay": h["weight_decay"]}


def asgd_hypers(group: Mapping[str, Any]) -> dict:
    return {"eta": _number(group["lr"]), "lambd": _number(group["lambd"]), "decay_power": _number(group["alpha"]),
            "weight_decay": _number(group["weight_decay"])}


def adafactor_arguments(h: Mapping[str, float]) -> dict:
    """Adafactor: only lr and weight_decay enter its threshold (beta2_decay, eps and d shape P and k)."""
    return {"lr": h["eta"], "weight_decay": h["weight_decay"]}


def adafactor_hypers(group: Mapping[str, Any]) -> dict:
    return {"eta": _number(group["lr"]), "weight_decay": _number(group["weight_decay"])}


def muon_arguments(nesterov: bool):
    def arguments(h: Mapping[str, float]) -> dict:
        return {"lr": h["eta"], "momentum": h["beta"], "nesterov": nesterov, "weight_decay": h["weight_decay"]}

    return arguments


def muon_hypers(group: Mapping[str, Any]) -> dict:
    return {"eta": _number(group["lr"]), "beta": _number(group["momentum"]),
            "weight_decay": _number(group["weight_decay"])}


def shampoo_arguments(h: Mapping[str, float]) -> dict:
    """pytorch_optimizer's Shampoo with momentum 0 and coupled decay (its buffer with momentum > 0 holds the
    preconditioned update, so that update is no single recurrence in P's metric)."""
    return {"lr": h["eta"], "momentum": 0.0, "weight_decay": h["weight_decay"], "weight_decouple": False,
            "fixed_decay": False}


def soap_arguments(h: Mapping[str, float]) -> dict:
    """pytorch_optimizer's SOAP with its bias correction on, no gradient normalisation, dimensions unmerged."""
    return {"lr": h["eta"], "betas": (h["beta1"], h["beta2"]), "eps": h["eps"], "weight_decay": h["weight_decay"],
            "correct_bias": True, "normalize_gradient": False, "merge_dims": False}
