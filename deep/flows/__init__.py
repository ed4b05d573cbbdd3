"""Stable and central flows of a network's full-batch training: the time-averaged trajectory at the edge.

What it is for: predicting, from the start of a run, where its oscillating trajectory goes on average
(Cohen, Damian, Talwalkar, Kolter and Lee, *Understanding Optimization in Deep Learning with Central
Flows*, ICLR 2025): the flows of :mod:`aeos_theory.central_flow`, given a network as their problem.

Main entry points: :func:`central_flow` (any model, loss and data, the optimizer by name or as a
``torch.optim`` object, a scheduler followed update by update; ``central=False`` for the stable flow)
and :func:`flow_of_run` (the flow of an ``aeos train`` configuration, on the run's own grid), both in
:mod:`.network`, which also holds :class:`NetworkFlow`, the network as a flow problem;
:mod:`.follow` reads what a flow follows from torch objects (and refuses what it cannot follow);
:func:`flow_comparison` (:mod:`.experiments`) puts a run measured at every step beside its two flows.

Built on :mod:`deep.curvature`, :mod:`deep.measure` and :mod:`deep.training` (the data and initial model
of a run); nothing in ``deep`` imports it.
"""

from __future__ import annotations

from deep._lazy import lazy_attributes

_PUBLIC = {"central_flow": ".network", "flow_of_run": ".network", "flow_experiment": ".network",
           "NetworkFlow": ".network", "flow_comparison": ".experiments"}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
