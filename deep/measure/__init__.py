"""Raw and preconditioned sharpness of a network, and where a live optimizer stands against its threshold.

What it is for: the quantities the theory is about, measured on a real network and a real
``torch.optim`` optimizer: the sharpness S = lambda_max(H) of the full-batch loss, the preconditioned
sharpness S_P = lambda_max(P^-1/2 H P^-1/2) with P read from the optimizer's state as its last step used
it, and the edge of that step, eta_S_P against its threshold c_t.

Main entry points:

* :func:`sharpness`, :func:`preconditioned_sharpness` and :func:`top_eigenpairs` (:mod:`.sharpness`;
  ``which=``, ``params=``, ``curvature="ggn"``), with :func:`gradient_overlap` and :func:`layer_mass`;
* :func:`measure_edge` (:mod:`.edge`): eta_S_P, c_t and their ratio for the update just taken, with the
  lr that update used (remembered as the step ran, :mod:`.last_step`);
* :class:`SharpnessTracker` (:mod:`.tracker`): warm-started periodic measurement in a training loop;
* :func:`batch_sharpness` (:mod:`.batch`; :class:`BatchSharpness`, :func:`batch_sharpness_forms`): the curvature
  a minibatch step meets, E_B[g_B^T H_B g_B] / E_B[|g_B|^2], raw, with the optimizer's P or along its next
  step (:mod:`.next_step`), over random batches;
* :mod:`.oscillation`: the period-2 amplitude of the iterates along the top eigenvector.

Built on :mod:`deep.curvature`; :mod:`deep.training` and :mod:`deep.flows` build on it.
"""

from __future__ import annotations

from deep._lazy import lazy_attributes

_PUBLIC = {
    "sharpness": ".sharpness", "preconditioned_sharpness": ".sharpness", "top_eigenpairs": ".sharpness",
    "gradient_overlap": ".sharpness", "layer_mass": ".sharpness",
    "measure_edge": ".edge", "Edge": ".edge", "EdgeSetting": ".edge", "edge_setting": ".edge",
    "CombinedEdge": ".edge",
    "SharpnessTracker": ".tracker", "period_two_amplitude": ".oscillation",
    "batch_sharpness": ".batch", "batch_sharpness_forms": ".batch", "BatchSharpness": ".batch",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
