"""Independent references and small problems shared by the tests (imported by test modules; fixtures
wrapping them live in ``conftest.py``).

Nothing here calls the package's own measurement code: dense Hessians come from
``torch.autograd.functional.hessian``, gradients from plain ``loss.backward()``, the fake CIFAR-10
folder is written in the official pickle format by hand.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1/2 ||f - y||^2 averaged over the chunk's examples (the paper's square loss), written out here."""
    return 0.5 * ((outputs - targets) ** 2).sum(dim=1).mean()


def tiny_problem(seed: int = 0, n: int = 40, dtype: torch.dtype = torch.float64):
    """MLP 5-12-8-3 tanh (203 parameters) on random regression data: (model, x, y)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    x = torch.randn(n, 5, generator=g, dtype=dtype)
    y = torch.randn(n, 3, generator=g, dtype=dtype)
    return model, x, y


def digits_problem(n: int = 300, hidden: int = 40, seed: int = 0):
    """sklearn digits (first n, /16, one-hot) and a 64-hidden-10 tanh MLP (3010 parameters at hidden 40)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data[:n] / 16.0, dtype=torch.float32)
    y = torch.nn.functional.one_hot(torch.tensor(d.target[:n]), 10).float()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))
    return model, x, y


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss=mse, vectorize: bool = False) -> np.ndarray:
    """H of the full-batch loss by torch.autograd.functional.hessian on the flat parameter vector
    (``vectorize``: its rows by vmap, faster)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def total(flat):
        parts = dict(zip(names, (c.view(s) for c, s in zip(flat.split([s.numel() for s in shapes]), shapes))))
        return loss(torch.func.functional_call(model, parts, (x,)), y)

    return torch.autograd.functional.hessian(total, flat0, vectorize=vectorize).numpy()


def autograd_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain loss.backward() gradient (no torch.func), flat; the model's .grad is left cleared."""
    model.zero_grad()
    mse(model(x), y).backward()
    g = torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()])
    model.zero_grad()
    return g


def write_fake_cifar(folder: Path, per_batch: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """data_batch_1..5 as the official python release stores them: dict(b'data' uint8 (N, 3072), b'labels')."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    datas, labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"batch_label": f"training batch {i} of 5".encode(), b"labels": lab, b"data": data,
                         b"filenames": [b"x.png"] * per_batch}, fh)
        datas.append(data)
        labels += lab
    return np.concatenate(datas), np.array(labels)


# ----------------------------------------------------------------------------- torch's update maps
def nadam_mu(b1: float, psi: float, s: int) -> float:
    return b1 * (1.0 - 0.5 * 0.96 ** (s * psi))


def step_map(name: str, h: float, p: float, hyper: dict, t: int | None) -> np.ndarray:
    """torch's t-th update on L = 1/2 h x^2 with P = p frozen, as a matrix on (x, buffer); t = None is
    the settled update (bias corrections gone, NAdam's mu at its limit beta1, or beta1/2 when psi = 0).

    SGD: d = g + wd x; buf = d (t = 1) or momentum buf + (1 - dampening) d (skipped when momentum = 0);
    Nesterov d = d + momentum buf; x -= lr d.  Adam: g += wd x (AdamW: x *= 1 - lr wd instead);
    m = b1 m + (1 - b1) g; x -= lr / (1 - b1^t) m / P.  NAdam: mu_t, mu_{t+1}, Pi_t = prod mu;
    x -= lr (1 - mu_t)/(1 - Pi_t) g / P + lr mu_{t+1} / (1 - Pi_t mu_{t+1}) m / P.
    RMSprop: buf = momentum buf + g / P; x -= lr buf (or x -= lr g / P without momentum).
    """
    if name in ZOO_MAPS:
        return zoo_step_map(name, h, p, hyper, t)
    lr, w = hyper["eta"], hyper.get("weight_decay", 0.0)
    coupled = 0.0 if name == "adamw" else w
    g = np.array([h + coupled, 0.0])  # the (preconditioned) gradient G acting on (x, buffer)
    one = np.array([1.0, 0.0])
    if name in ("gd", "heavy_ball", "nesterov"):
        mom = hyper.get("beta", 0.0)
        if mom == 0:
            return np.array([one - lr * g, [0.0, 0.0]])
        damp = hyper.get("dampening", 0.0)
        buf = g.copy() if t == 1 else mom * np.array([0.0, 1.0]) + (1 - damp) * g
        direction = g + mom * buf if name == "nesterov" else buf
        return np.array([one - lr * direction, buf])
    if name == "rmsprop":
        mom = hyper.get("beta", 0.0)
        buf = mom * np.array([0.0, 1.0]) + g / p
        return np.array([one - lr * buf, buf]) if mom else np.array([one - lr * g / p, [0.0, 0.0]])
    b1 = hyper["beta1"]
    m = b1 * np.array([0.0, 1.0]) + (1 - b1) * g
    if name in ("adam", "adamw"):
        shrink = 1 - lr * w if name == "adamw" else 1.0
        bias = 1.0 if t is None else 1 - b1**t
        return np.array([shrink * one - lr / bias * m / p, m])
    psi = hyper["momentum_decay"]
    if t is None:
        mu = mu_next = b1 if psi > 0 else b1 / 2
        product = 0.0
    else:
        product = math.prod(nadam_mu(b1, psi, s) for s in range(1, t + 1))
        mu, mu_next = nadam_mu(b1, psi, t), nadam_mu(b1, psi, t + 1)
    x_row = one - lr * (1 - mu) / (1 - product) * g / p - lr * mu_next / (1 - product * mu_next) * m / p
    return np.array([x_row, m])


#: The optimizers beyond the paper's seven whose maps :func:`zoo_step_map` writes out.
ZOO_MAPS = ("adagrad", "adamax", "adadelta", "radam", "asgd", "adafactor", "muon", "muon_plain", "shampoo", "soap")


def radam_rectification(t: int, b2: float) -> float:
    """torch's RAdam: rho_inf = 2/(1 - b2) - 1, rho_t = rho_inf - 2 t b2^t / (1 - b2^t); the rectification
    sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)) when rho_t > 5, else None."""
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
    if rho_t <= 5:
        return None
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


def zoo_step_map(name: str, h: float, p: float, hyper: dict, t: int | None) -> np.ndarray:
    """torch's t-th update of the optimizers beyond the paper's seven on L = 1/2 h x^2, P = p frozen, as a
    matrix on (x, buffer); written from the sources (``_single_tensor_*`` of torch.optim, pytorch_optimizer).

    Adagrad: g += wd x; x -= lr / (1 + (t - 1) lr_decay) g / P.  Adamax: Adam's (P = exp_inf).  Adadelta:
    g += wd x; x -= lr g / P.  RAdam: g += wd x; m = b1 m + (1 - b1) g; x -= lr / (1 - b1^t) r_t m / P when
    rho_t > 5, x -= lr / (1 - b1^t) m otherwise.  ASGD: g += wd x; x *= 1 - lambd eta_t; x -= eta_t g,
    eta_t = lr / (1 + lambd lr (t - 1))^alpha.  Adafactor (its step factor k = 1): x *= 1 - lr wd;
    x -= lr g / P.  Muon: b = mu b + (1 - mu) g; M = (1 - mu) g + mu b (nesterov) or b; x *= 1 - lr wd;
    x -= lr M / P (shape adjustment 1).  Shampoo (momentum 0): g += wd x; x -= lr g / P.  SOAP: m = b1 m +
    (1 - b1) g; x -= lr / (1 - b1^t) m / P; x *= 1 - lr wd.  t = None: settled (the decays and
    corrections at their limit; Adagrad's and ASGD's decayed lr is taken as the undecayed one)."""
    lr, w = hyper["eta"], hyper.get("weight_decay", 0.0)
    one, buf = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    none = np.array([0.0, 0.0])
    if name in ("adagrad", "adadelta", "shampoo", "asgd"):
        g = np.array([h + w, 0.0])
        if name == "adagrad":
            lr = lr / (1 + ((t or 1) - 1) * hyper["lr_decay"])
        if name == "asgd":
            lr = lr / (1 + hyper["lambd"] * lr * ((t or 1) - 1)) ** hyper["decay_power"]
            return np.array([(1 - hyper["lambd"] * lr) * one - lr * g, none])
        return np.array([one - lr * g / p, none])
    if name == "adafactor":
        return np.array([(1 - lr * w) * one - lr * np.array([h, 0.0]) / p, none])
    if name in ("muon", "muon_plain"):
        mu = hyper["beta"]
        b = mu * buf + (1 - mu) * np.array([h, 0.0])
        m = (1 - mu) * np.array([h, 0.0]) + mu * b if name == "muon" else b
        return np.array([(1 - lr * w) * one - lr * m / p, b])
    b1 = hyper["beta1"]
    coupled = 0.0 if name == "soap" else w
    m = b1 * buf + (1 - b1) * np.array([h + coupled, 0.0])
    bias = 1.0 if t is None else 1 - b1**t
    if name == "adamax":
        return np.array([one - lr / bias * m / p, m])
    if name == "soap":
        return np.array([(1 - lr * w) * (one - lr / bias * m / p), m])
    rect = 1.0 if t is None else radam_rectification(t, hyper["beta2"])
    if t is None and hyper["beta2"] <= 2 / 3:  # rho_inf <= 5: the warm phase for ever
        rect = None
    if rect is None:
        return np.array([one - lr / bias * m, m])
    return np.array([one - lr / bias * rect * m / p, m])


def spectral_radius(matrix: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(matrix))))


def bisect_threshold(name: str, hyper: dict, t: int | None, rtol: float = 1e-12) -> float:
    """lambda* of torch's t-th update by bisection on the spectral radius of :func:`step_map` (P = 1):
    the curvature of the objective, h + wd for coupled weight decay."""
    coupled = 0.0 if name in ("adamw", "adafactor", "muon", "muon_plain", "soap") else hyper.get("weight_decay", 0.0)
    coupled += hyper.get("lambd", 0.0)  # ASGD's decay x *= 1 - lambd eta_t is a coupled decay at the same rate
    lo, hi = 0.0, 1.0 / hyper["eta"]
    while spectral_radius(step_map(name, hi - coupled, 1.0, hyper, t)) < 1:
        lo, hi = hi, 2 * hi
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if spectral_radius(step_map(name, mid - coupled, 1.0, hyper, t)) < 1 else (lo, mid)
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------- run folders and commands
def same_rows(a: list[dict], b: list[dict]) -> bool:
    """metrics.csv rows equal in every column but wall_time (NaN == NaN)."""
    from deep.training.runlog import COLUMNS

    def key(rows):
        return [tuple("nan" if isinstance(r[c], float) and math.isnan(r[c]) else r[c]
                      for c in COLUMNS if c != "wall_time") for r in rows]
    return key(a) == key(b)


def train_args(cfg: dict, out: Path) -> list[str]:
    """``aeos train`` arguments for a TrainConfig given as a dict (its hyper dict holding only eta)."""
    args = ["train", "--out", str(out), "--no-progress", "--lr", str(cfg["hyper"]["eta"])]
    for k, v in cfg.items():
        if k != "hyper":
            args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def run_cli(main, argv: list[str]) -> tuple[int, str, str]:
    """Run a command's ``main(argv)`` in this process: (exit status, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- two ranks (torch.distributed)
def sharded_measurements(rank: int, world: int, rendezvous: str, out: str) -> None:
    """One rank of the sharding test: the tiny problem's data split in contiguous shards, every full-batch
    quantity of ``deep`` measured through :class:`deep.Shard`; results written to ``out/rank<r>.json``.
    The process ends through :func:`deep.training.distributed.run_as_rank` (as the package's ranks do)."""
    from deep.training.distributed import run_as_rank

    run_as_rank(lambda: _measure_shard(rank, world, rendezvous, out))


def _measure_shard(rank: int, world: int, rendezvous: str, out: str) -> int:
    import json

    import torch.distributed as dist

    import deep

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        model, x, y = tiny_problem(seed=2, n=41)
        opt = adam_trained(model, x, y)
        mine = slice(*[(0, 20), (20, 41)][rank])
        shard = deep.Shard([(x[mine][:13], y[mine][:13]), (x[mine][13:], y[mine][13:])])
        result = full_batch_measurements(model, opt, shard)
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump(result, fh)
    finally:
        dist.destroy_process_group()
    return 0


def full_batch_measurements(model, opt, data) -> dict:
    """Every full-batch quantity of ``deep`` on the tiny problem's ``data`` (chunks or a deep.Shard):
    loss, gradient, one HVP, S, S_P, eta_S_P and a seeded trace estimate, and the minibatch batch
    sharpness (its three forms over 12 seeded batches of 7 drawn from the whole data set) (JSON-ready)."""
    import deep
    from deep.measure.batch import batch_sharpness_forms

    v = torch.linspace(-1, 1, 203, dtype=torch.float64)
    op = deep.curvature_operator(model, mse, data)
    batch = batch_sharpness_forms(model, mse, data, 7, opt, forms=("raw", "preconditioned", "update"), samples=12,
                                  tol=1e-9, seed=5)
    return {"loss": op.loss(), "gradient": op.gradient().tolist(), "hvp": (op @ v).tolist(),
            "sharpness": deep.sharpness(model, mse, data, tol=1e-10, max_iter=203),
            "preconditioned": deep.preconditioned_sharpness(model, mse, data, opt, tol=1e-10, max_iter=203),
            "eta_S_P": deep.measure_edge(model, mse, data, opt, tol=1e-10, max_iter=203).eta_S_P,
            "trace": deep.hessian_trace(model, mse, data, hvps=30, seed=4).estimate,
            **{f"batch_{form}": [r.value, r.stderr, r.samples] for form, r in batch.items()}}


def adam_trained(model, x, y, steps: int = 3):
    """Adam (lr 1e-2, coupled weight decay 0.1) after ``steps`` full-batch steps of the square loss."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(steps):
        opt.zero_grad()
        mse(model(x), y).backward()
        opt.step()
    return opt


# ----------------------------------------------------------------------------- a newcomer's GPT
class CausalSelfAttentionBlock(nn.Module):
    """Pre-LayerNorm block with causal ``F.scaled_dot_product_attention`` and a GELU MLP (as people write one)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.ln1, self.ln2 = heads, nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2)
                   for t in self.qkv(self.ln1(x)).split(C, dim=2))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Token and position embeddings, SDPA blocks, a final LayerNorm and a head tied to the token embedding."""

    def __init__(self, vocab: int = 11, context: int = 6, width: int = 8, heads: int = 2, layers: int = 1) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[CausalSelfAttentionBlock(width, heads) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.ln(self.blocks(x)))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every position (nats per token)."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def token_data(n: int = 8, context: int = 6, vocab: int = 11, seed: int = 0):
    """Random token windows and their next-token targets (long tensors (n, context))."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, context + 1), generator=g)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def eigsh_top(model: nn.Module, loss, batches, scale: torch.Tensor | None = None) -> float:
    """lambda_max(D H D), D = diag(scale) (I when None), by scipy eigsh (tol 1e-12) on H v computed here with
    plain ``torch.autograd`` double backward on the model itself, attention on torch's math backend.
    ``batches``: (X, y) pairs weighted by size."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    from torch.nn.attention import SDPBackend, sdpa_kernel

    params = list(model.parameters())  # a tied weight appears once
    n = sum(p.numel() for p in params)
    total = sum(len(X) for X, _ in batches)
    d = torch.ones(n, dtype=torch.float64) if scale is None else scale.double()

    def matvec(v):
        v = torch.as_tensor(np.asarray(v).reshape(-1), dtype=torch.float64) * d
        out = torch.zeros(n, dtype=torch.float64)
        with sdpa_kernel(SDPBackend.MATH):
            for X, y in batches:
                grads = torch.autograd.grad(loss(model(X), y) * len(X) / total, params, create_graph=True)
                flat = torch.cat([g.reshape(-1) for g in grads])
                out += torch.cat([h.reshape(-1) for h in torch.autograd.grad(flat @ v.to(flat.dtype), params)]).double()
        return (out * d).numpy()

    return float(eigsh(LinearOperator((n, n), matvec=matvec, dtype=np.float64), k=1, which="LA", tol=1e-12,
                       v0=np.ones(n))[0][0])
