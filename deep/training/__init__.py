"""Training runs that record raw and preconditioned sharpness as they go, and what they are made of.

What it is for: the paper's experiments as resumable runs, each a folder (``config.json``,
``metrics.csv``, ``checkpoint.pt``, ``summary.json``) that proves what it holds, on data sets that work
offline, with the package's optimizer names on top of ``torch.optim``.

Main entry points:

* :func:`run` with a :class:`TrainConfig` (:mod:`.train`, :mod:`.config`), read back by
  :func:`read_metrics` (:mod:`.runlog`; the folder's proofs: :mod:`.run_folder`);
* your own loop instead: :class:`Monitor` (:mod:`.monitor`) measures S, S_P and the edge every N updates and
  writes rows of the same columns; :mod:`.callbacks` wraps it for PyTorch Lightning and the Hugging Face
  ``Trainer``;
* data (:mod:`.data`: :class:`Dataset`, :func:`load`, :func:`load_digits`, :func:`load_text`,
  :func:`load_cifar10`, :func:`load_synthetic`), models (:func:`build_model`, :mod:`.models`), losses
  (:func:`mse`, :func:`cross_entropy`, :mod:`.losses`), :func:`make_optimizer` (:mod:`.optim`) and
  learning-rate schedules (:mod:`.schedules`); the names the command line accepts (:mod:`.names`,
  no torch);
* several processes: :mod:`.distributed` (ranks, the launcher) and :mod:`.rank` (one rank of a run
  given as a config, ``python -m deep.training.rank``).

Built on :mod:`deep.curvature` and :mod:`deep.measure`.  Importing it is light: torch is imported when
the first of these names is used.
"""

from __future__ import annotations

from deep._lazy import lazy_attributes

_PUBLIC = {
    "run": ".train", "TrainConfig": ".config", "read_metrics": ".runlog",
    "Dataset": ".data", "chunks": ".data", "load": ".data", "load_cifar10": ".data", "load_digits": ".data",
    "load_synthetic": ".data", "load_text": ".data",
    "build_model": ".models", "mse": ".losses", "cross_entropy": ".losses", "get_loss": ".losses",
    "make_optimizer": ".optim", "Monitor": ".monitor",
    "lightning_callback": ".callbacks", "huggingface_callback": ".callbacks",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
