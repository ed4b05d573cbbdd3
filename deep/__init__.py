"""deep"""

# Measurement API (sharpness, preconditioned sharpness, HVPs, Lanczos, preconditioners).
# Note: the function ``deep.sharpness`` shadows the submodule name; import the module's other names
# with ``from deep.sharpness import ...`` (never ``import deep.sharpness as m``).
from .hessian import HessianOperator, full_batch_gradient, full_batch_loss, hvp
from .lanczos import LanczosConvergenceWarning, LanczosResult, lanczos
from .preconditioners import preconditioner_diagonal, preconditioner_of
from .sharpness import (
    SharpnessResult,
    SharpnessTracker,
    gradient_overlap,
    layer_mass,
    preconditioned_sharpness,
    sharpness,
    top_eigenpairs,
)

# Training runs (data, models, losses, optimizers by package name, resumable run folders).
from .config import TrainConfig
from .data import Dataset, chunks, load, load_cifar10, load_digits, load_synthetic, load_text
from .losses import cross_entropy, get_loss, mse
from .models import build_model
from .optim import make_optimizer
from .runlog import read_metrics
from .train import run
