"""Models and losses that torch cannot differentiate twice: found, and the module responsible named.

Every curvature product differentiates the loss twice (H v is the derivative of <g, v>).  Some operations
have a first derivative but no second: ``torch.cdist`` ("the derivative for '_cdist_backward' is not
implemented"), ``F.ctc_loss``, ``F.embedding_bag(mode="max")``, the fused flash-attention kernels
(which :func:`deep.curvature.inputs.evaluation` avoids by running attention on the math backend), and any
``torch.autograd.Function`` whose backward is marked ``@once_differentiable``.  The first kinds raise
inside autograd; the last is worse: autograd gives its backward a dead-end node, so a double backward
*silently* treats that part of the gradient as constant and returns a wrong Hessian.

:func:`second_derivatives` turns both into one ValueError that names the culprit, e.g. ``nn.Module
'blocks.0.rbf' (RBF) uses an operation without a second derivative: the derivative for '_cdist_backward'
is not implemented``.  To find it, the model is run once more on the first chunk
with a forward hook on every module; each module is then differentiated twice on the inputs it received,
innermost first (forward hooks fire children before parents), and the loss on the model's outputs.  That
costs a few passes over one chunk and happens only on the error path.  :func:`check_graph` looks for
the dead ends of ``@once_differentiable`` in a kept gradient graph (a walk over its nodes, no product).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

#: Messages of torch errors that mean "this operation has no second derivative".
_MISSING = re.compile(r"derivative for .* is not implemented|once_differentiable|differentiate twice")


class NoSecondDerivative(RuntimeError):
    """A kept gradient graph holds the dead end of an ``@once_differentiable`` backward."""


def lacks_second_derivative(err: BaseException) -> bool:
    """True when ``err`` is torch saying that an operation has no second derivative."""
    return isinstance(err, NoSecondDerivative) or (
        isinstance(err, (RuntimeError, NotImplementedError)) and bool(_MISSING.search(str(err))))


def dead_ends(tensors: list[Tensor]) -> bool:
    """True when the autograd graph of ``tensors`` holds the node autograd gives the output of an
    ``@once_differentiable`` backward (a node that raises when reached and leads nowhere)."""
    stack = [t.grad_fn for t in tensors if isinstance(t, Tensor) and t.grad_fn is not None]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__ == "Error":
            return True
        stack.extend(f for f, _ in node.next_functions if f is not None)
    return False


def check_graph(gradients: list[Tensor]) -> None:
    """Raise :class:`NoSecondDerivative` when the graph of a gradient kept for double backward has a dead
    end: its products would leave out part of the Hessian without a word."""
    if dead_ends(gradients):
        raise NoSecondDerivative("a torch.autograd.Function whose backward is marked @once_differentiable (its "
                                 "second derivative would silently be taken as 0)")


@contextlib.contextmanager
def second_derivatives(model: nn.Module, loss_fn: Callable, first_chunk: Callable[[], tuple],
                       call: Callable[[nn.Module, Any], Any]) -> Iterator[None]:
    """Turn torch's error for an operation without a second derivative into a ValueError naming the module
    (or the loss) that uses it.  ``first_chunk()`` gives ``(inputs, targets)`` of one chunk, ``call(model,
    inputs)`` runs the model on them as the products do."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as err:
        if not lacks_second_derivative(err):
            raise
        detail = " ".join(str(err).split()).rstrip(".")
        inputs, targets = first_chunk()
        who = culprit(model, loss_fn, inputs, targets, call)
        raise ValueError(f"{who or 'the model or the loss'} uses an operation without a second derivative: "
                         f"{detail}; curvature differentiates the loss twice, so write that operation with ones "
                         "torch differentiates twice") from None


def culprit(model: nn.Module, loss_fn: Callable, inputs: Any, targets: Any,
            call: Callable[[nn.Module, Any], Any]) -> str | None:
    """``"nn.Module 'name' (Class)"`` for the innermost module without a second derivative, ``"loss_fn
    (name)"`` when it is the loss, None when neither fails on its own."""
    names = {id(m): name for name, m in model.named_modules()}
    seen: list[tuple[nn.Module, tuple, dict]] = []
    hooks = [m.register_forward_hook(lambda m, args, kwargs, out: seen.append((m, args, kwargs)), with_kwargs=True)
             for m in model.modules()]
    try:
        with torch.enable_grad():
            outputs = call(model, inputs)
    finally:
        for hook in hooks:
            hook.remove()
    for module, args, kwargs in seen:  # children finish before their parents: innermost first
        if _fails(lambda a, k, m=module: m(*a, **k), (args, kwargs), list(module.parameters())):
            name = names.get(id(module), "")
            return f"nn.Module {name!r} ({type(module).__name__})" if name else f"the model ({type(module).__name__})"
    if _fails(lambda out, tgt: loss_fn(out, tgt), (outputs, targets), []):
        return f"loss_fn ({getattr(loss_fn, '__name__', type(loss_fn).__name__)})"
    return None


def _fails(fn: Callable, arguments: tuple, params: list[Tensor]) -> bool:
    """True when ``fn(*arguments)`` cannot be differentiated twice in its floating-point tensor arguments
    and ``params``: d/dx of |d(|fn|^2)/dx|^2 raises, or its first derivative has a dead end."""
    leaves: list[Tensor] = []

    def leaf(t: Any) -> Any:
        if isinstance(t, Tensor) and t.is_floating_point():
            t = t.detach().requires_grad_(True)
            leaves.append(t)
        return t

    arguments = tree_map(leaf, arguments)
    wrt = leaves + [p for p in params if p.requires_grad]
    try:
        with torch.enable_grad():
            outs = [o for o in tree_flatten(fn(*arguments))[0]
                    if isinstance(o, Tensor) and o.is_floating_point() and o.requires_grad]
            if not outs or not wrt:
                return False
            g = torch.autograd.grad(sum(o.square().sum() for o in outs), wrt, create_graph=True, allow_unused=True)
            live = [gi for gi in g if gi is not None and gi.requires_grad]
            if dead_ends(live):
                return True
            if live:
                torch.autograd.grad(sum(gi.square().sum() for gi in live), wrt, allow_unused=True)
    except (RuntimeError, NotImplementedError) as err:
        return lacks_second_derivative(err)
    return False
