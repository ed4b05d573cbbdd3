"""Threshold values from the registry's closed forms: eta * lambda* and lambda*, without sympy.

The boundary engine (:mod:`aeos_theory.stability`) derives lambda* of each optimizer's update matrix
M_t(lambda) with sympy; the registry keeps the result as a closed form, ``OptimizerSpec.constant``
(eta * lambda* as a function of the hyperparameters and the step coefficients, checked against the
derivation by the tests), and this module evaluates it.  A scalar call costs microseconds and imports
neither sympy nor numpy; numpy arrays broadcast.

* :func:`threshold_constant`: eta * lambda*, the dimensionless level eta * S_P is compared with (38 for
  Adam at beta1 = 0.9), defined at eta = 0 too (its eta -> 0 limit);
* :func:`stability_threshold`: lambda* itself, in units of 1/(x units)^2, for eta > 0;
* :func:`threshold`: Adam's (2 + 2 beta1) / ((1 - beta1) eta), vectorised over numpy arrays.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import TYPE_CHECKING, Any, Callable

from aeos_theory.hyperparams import HYPERS
from aeos_theory.optimizers import OPTIMIZERS, OptimizerSpec, get_optimizer

if TYPE_CHECKING:
    import numpy as np

#: eta as a threshold constant accepts it: 0 <= eta (lr 0 takes no step, the constant is its eta -> 0 limit).
_ETA_OR_ZERO = dataclasses.replace(HYPERS["eta"], low_inclusive=True)


def threshold_constant(optimizer: str, *, step: int | None = None, **hyper: Any) -> float | np.ndarray:
    """eta * lambda*, the dimensionless threshold constant the normalised level eta * S_P is compared with.

    38 for Adam at beta1 = 0.9 (settled), 2 for GD, (2 + 2 beta1)(1 - beta1^t)/(1 - beta1) for Adam's
    t-th update, (1 + beta1)(2 - eta wd)/(1 - beta1) for AdamW (``step``: as :func:`stability_threshold`).
    ``eta`` may be left out when the constant does not depend on it (every optimizer but those with a
    decoupled decay x <- (1 - eta wd) x, which enters it, and ASGD, whose lr schedule reads eta), and may be 0: the constant's eta -> 0 limit, e.g.
    AdamW's 2 (1 + beta1)(1 - beta1^t)/(1 - beta1) (a param group with lr 0 takes no step, yet its level
    eta * S_P = 0 is compared with this).  Computed without dividing by eta, so it is finite for any eta.
    Hyperparameters given as numpy arrays broadcast (element by element: microseconds per element); the
    result is a float for scalars, an ndarray otherwise.
    """
    spec = get_optimizer(optimizer)
    if any(_is_array(value) for value in hyper.values()):
        return _broadcast(threshold_constant, spec, step, hyper)
    return _constant(spec, step, _constant_hypers(spec, hyper))


def stability_threshold(optimizer: str, *, step: int | None = None, **hyper: Any) -> float | np.ndarray:
    """Largest stable lambda* = (eta * lambda*) / eta of ``optimizer``'s update with P frozen, in units of
    1/(x units)^2; eta > 0 is required.

    lambda is an eigenvalue of P^-1 (H + wd I) for coupled weight decay and of P^-1 H otherwise (see
    :mod:`aeos_theory.optimizers`).  ``step=None``: the settled update (t -> infinity): GD 2/eta; heavy
    ball (2 + 2 beta)/((1 - dampening) eta) (2/eta when beta = 0, where torch skips the momentum branch);
    Nesterov (2 + 2 beta)/((1 + 2 beta) eta); Adam (2 + 2 beta1)/((1 - beta1) eta); NAdam
    (2 + 2 beta1)/((1 - beta1)(1 + 2 beta1) eta); AdamW (1 + beta1)(2 - eta wd)/((1 - beta1) eta).
    ``step=t`` (t >= 1, t = 1 the first ``.step()``): the t-th update exactly as torch applies it,
    e.g. Adam (2 + 2 beta1)(1 - beta1^t)/((1 - beta1) eta), NAdam with its momentum schedule
    (``momentum_decay``), SGD's first step (the buffer starts at the gradient).  For the adaptive
    optimizers the threshold describes updates t >= 2: the first one divides the gradient by its own size
    (P_1 = |g_1| + eps, a sign step), which no frozen-P threshold describes (``step=1`` returns the frozen
    map's value all the same).  Evaluates the registry's closed form (:func:`threshold_constant`); numpy
    arrays broadcast as there.  inf where the lr has decayed to 0 (settled Adagrad with ``lr_decay`` > 0,
    ASGD with ``lambd`` > 0): every curvature is stable.
    """
    spec = get_optimizer(optimizer)
    if any(_is_array(value) for value in hyper.values()):
        return _broadcast(stability_threshold, spec, step, hyper)
    values = spec.validate(hyper)
    eta, constant = values["eta"], _constant(spec, step, values)
    value = constant / eta
    if math.isinf(constant):  # the lr has decayed to 0 (Adagrad's lr_decay, ASGD, settled): no curvature binds
        return constant
    if not math.isfinite(value):
        raise ValueError(f"eta must be large enough for the threshold {constant:g}/eta to fit in a float64; "
                         f"got eta = {eta!r}")
    return value


def threshold(beta1: float | np.ndarray, eta: float | np.ndarray) -> float | np.ndarray:
    """Adam's threshold (2 + 2 beta1) / ((1 - beta1) eta) on S_P = lambda_max(P^-1 H): 38/eta at beta1 = 0.9.

    ``beta1`` (0 <= beta1 < 1) and ``eta`` (0 < eta) are numbers or numpy arrays, which broadcast: a float
    for two numbers, an ndarray otherwise.  An array is checked elementwise; the ValueError names the
    argument, its range and the first offending element with its index.
    """
    if beta1 is None:
        raise ValueError("beta1 must be a real number with 0 <= beta1 < 1, got None")
    if not (_is_array(beta1) or _is_array(eta)):
        return stability_threshold("adam", beta1=beta1, eta=eta)
    import numpy as np

    b1, step_size = _checked("beta1", beta1), _checked("eta", eta)
    shape = _broadcast_shape({"beta1": b1, "eta": step_size})
    spec = OPTIMIZERS["adam"]
    with np.errstate(over="ignore"):
        value = np.asarray(spec.constant({"beta1": b1, **spec.step_coefficients(None, {"beta1": b1})}) / step_size)
    if not np.isfinite(value).all():
        index = tuple(int(i) for i in np.unravel_index(np.argmax(~np.isfinite(value)), shape))
        raise ValueError(f"eta must be large enough for the threshold to fit in a float64; got eta = "
                         f"{float(np.broadcast_to(step_size, shape)[index])!r} (at index {index})")
    return value


def _constant(spec: OptimizerSpec, step: int | None, values: dict[str, float]) -> float:
    """eta * lambda* at validated hyperparameters ``values``: the registry's closed form at the step's
    coefficients."""
    return float(spec.constant({**values, **spec.step_coefficients(step, values)}))


def _constant_hypers(spec: OptimizerSpec, hyper: dict[str, Any]) -> dict[str, float]:
    """``hyper`` validated for a threshold constant: as :meth:`OptimizerSpec.validate`, but eta may be 0,
    and it is required only where it enters the constant (decoupled decay, ASGD's lr schedule)."""
    eta = hyper.get("eta")
    if eta is not None and _ETA_OR_ZERO.check(eta) == 0.0:
        return {**spec.validate({**hyper, "eta": None}, require=()), "eta": 0.0}
    needs_eta = spec.decay == "decoupled" or spec.eta_in_coefficients
    return spec.validate(hyper, require=("eta",) if needs_eta else ())


def _is_array(value: object) -> bool:
    """True for a numpy array.  numpy is not imported to ask: an ndarray exists only once numpy is."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _checked(name: str, value: object) -> float | np.ndarray:
    """``value`` checked against the range of hyperparameter ``name``: elementwise for an array."""
    return HYPERS[name].check_array(value) if _is_array(value) else HYPERS[name].check(value)


def _broadcast_shape(arrays: dict[str, Any]) -> tuple[int, ...]:
    import numpy as np

    shapes = {name: np.shape(value) for name, value in arrays.items()}
    try:
        return np.broadcast_shapes(*shapes.values())
    except ValueError:
        raise ValueError(f"{' and '.join(shapes)} must broadcast together; got shapes "
                         f"{', '.join(f'{name} {shape}' for name, shape in shapes.items())}") from None


def _broadcast(function: Callable[..., float], spec: OptimizerSpec, step: int | None,
               hyper: dict[str, Any]) -> np.ndarray:
    """``function`` (a scalar threshold) at every element of the broadcast hyperparameters; a ValueError
    from one element names its index."""
    import numpy as np

    for name, value in hyper.items():
        if _is_array(value) and value.dtype.kind not in "iuf":
            raise ValueError(f"{name} must hold real numbers; got an array of dtype {value.dtype}")
    shape = _broadcast_shape(hyper)
    columns = {name: np.broadcast_to(value, shape) for name, value in hyper.items()}
    out = np.empty(shape)
    for index in np.ndindex(shape):
        try:
            out[index] = function(spec.name, step=step, **{name: column[index].item()
                                                           for name, column in columns.items()})
        except ValueError as err:
            raise ValueError(f"{err} (at index {index})") from None
    return out
