"""Networks of the paper's experiments, with seeded initialisation and no BatchNorm or Dropout.

Every model is a deterministic function of its parameters (no train/eval difference), which the
sharpness measurement needs: the Hessian is that of one fixed function of theta.

* :class:`MLP`: fully connected, ``depth`` hidden layers of ``width`` units, chosen activation.
* :class:`CNN`: ``depth`` conv layers (3x3, ``width`` channels) with average pooling, then linear.
* :class:`ResNet`: a conv stem and ``depth`` residual blocks x + a(conv(a(conv x))) without
  BatchNorm (the residual branch scaled by 1/sqrt(depth) so the forward pass stays bounded).
* :class:`CausalTransformer`: a small pre-LayerNorm decoder for character-level language modelling.

:func:`build_model` creates any of them with PyTorch's default initialisation drawn from ``seed``
only (the global RNG is left untouched), on CPU first so the weights are device-independent.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aeos_base import checks

from .names import ACTIVATIONS, MODELS


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`deep.training.names.ACTIVATIONS`)."""
    return getattr(nn, ACTIVATIONS[checks.choice("activation", name, ACTIVATIONS)])()


class MLP(nn.Module):
    """x -> W_L a(... a(W_1 x + b_1) ...) + b_L on the flattened input; widths e.g. 64-200-200-10."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 200, depth: int = 2, act: str = "tanh"):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim] + [width] * depth
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation(act)]
        layers.append(nn.Linear(dims[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class CNN(nn.Module):
    """``depth`` blocks conv3x3(width) -> a -> avgpool2 (while the image is >= 2 px), then linear."""

    def __init__(self, input_shape: tuple[int, int, int], out_dim: int, width: int = 32, depth: int = 2,
                 act: str = "relu"):
        super().__init__()
        channels, h, w = input_shape
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1), activation(act)]
            channels = width
            if min(h, w) >= 2:
                layers.append(nn.AvgPool2d(2))
                h, w = h // 2, w // 2
        self.input_shape = tuple(input_shape)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * h * w, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)
        return self.head(self.features(x).flatten(1))


class _Block(nn.Module):
    def __init__(self, width: int, act: str, scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act1, self.act2 = activation(act), activation(act)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.act2(self.conv2(self.act1(self.conv1(x))))


class ResNet(nn.Module):
    """Stem conv3x3(width) -> ``depth`` residual blocks (no BatchNorm) -> global avgpool -> linear."""

    def __init__(self, input_shape: tuple[int, int, int], out_dim: int, width: int = 16, depth: int = 2,
                 act: str = "relu"):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, padding=1), activation(act))
        self.blocks = nn.Sequential(*[_Block(width, act, 1.0 / math.sqrt(max(depth, 1))) for _ in range(depth)])
        self.head = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class _Attention(nn.Module):
    """Causal multi-head self-attention written out (softmax(q k^T / sqrt(d_h) + mask) v).

    Written with plain tensor ops rather than ``scaled_dot_product_attention`` so that forward-mode
    AD (``torch.func.jvp`` of a gradient, used for Hessian-vector products) works on every backend.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width must be divisible by heads, got width={dim}, heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class _DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, act: str):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), activation(act), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CausalTransformer(nn.Module):
    """Token + position embeddings -> ``depth`` pre-LN decoder blocks -> LN -> logits (b, T, vocab)."""

    def __init__(self, vocab: int, context: int, width: int = 64, depth: int = 2, heads: int = 4,
                 act: str = "gelu"):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[_DecoderBlock(width, heads, act) for _ in range(depth)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
        return self.head(self.ln(self.blocks(h)))


_DEFAULTS = {  # (width, depth, activation) when not given
    "mlp": (200, 2, "tanh"),
    "cnn": (32, 2, "relu"),
    "resnet": (16, 2, "relu"),
    "transformer": (64, 2, "gelu"),
}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, *, width: int | None = None,
                depth: int | None = None, act: str | None = None, seed: int = 0) -> nn.Module:
    """Model ``name`` (one of :data:`MODELS`) for inputs of ``input_shape`` and ``num_classes`` outputs.

    The weights are PyTorch's default initialisation drawn from a generator seeded with ``seed``
    (the global RNG state is restored afterwards), created on CPU.  For ``transformer``,
    ``input_shape = (context,)`` and ``num_classes`` is the vocabulary size.
    """
    checks.choice("model", name, MODELS)
    w0, d0, a0 = _DEFAULTS[name]
    width = w0 if width is None else width
    depth = d0 if depth is None else depth
    act = a0 if act is None else act
    checks.integer("width", width, low=1)
    checks.integer("depth", depth, low=0 if name == "mlp" else 1)
    activation(act)  # validates the name
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise ValueError(f"input_shape must be a tuple of positive integers such as (64,) or (3, 32, 32); "
                         f"got {input_shape!r}")
    shape = tuple(checks.integer("input_shape entry", s, low=1) for s in input_shape)
    if not shape:
        raise ValueError("input_shape must have at least one dimension; got ()")
    num_classes = checks.integer("num_classes", num_classes, low=1)
    if name in ("cnn", "resnet") and len(shape) != 3:
        raise ValueError(f"model {name!r} needs image inputs (channels, height, width); got input_shape {shape}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if name == "mlp":
            return MLP(math.prod(shape), num_classes, width, depth, act)
        if name == "cnn":
            return CNN(shape, num_classes, width, depth, act)  # type: ignore[arg-type]
        if name == "resnet":
            return ResNet(shape, num_classes, width, depth, act)  # type: ignore[arg-type]
        if len(shape) != 1:
            raise ValueError(f"model 'transformer' needs token inputs (context,); got input_shape {shape}")
        return CausalTransformer(num_classes, shape[0], width, depth, act=act)
