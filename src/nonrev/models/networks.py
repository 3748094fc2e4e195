"""Score networks: plain ``torch.nn.Module``s with ``forward(y, t)``, ``y`` (B, d)
flat rows, ``t`` (B,) intrinsic times, output (B, d). How their output becomes a
noise prediction and a score is :mod:`nonrev.scores.neural`'s business.

* :class:`MLPNet`: residual MLP with a sinusoidal time embedding, for vector data
  (and for small images, where a step costs far less than the convolutional
  network's; README: notes on performance).
* :class:`ConvNet`: small residual convolutional network for image-shaped data
  ``(C, H, W)`` (e.g. 8x8 digits as 1x8x8), time embedding added per channel.

Both embed ``log t`` rescaled to [0, 1] over the training range ``[t_min, t_max]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["ConvNet", "MLPNet", "NETWORKS", "SinusoidalTimeEmbedding", "build_network"]


class SinusoidalTimeEmbedding(nn.Module):
    """``t -> [sin(w_k c), cos(w_k c)]`` with ``c = 1000 (log t - log t_min) /
    (log t_max - log t_min)`` and ``w_k = 10000^{-k / (dim/2)}`` (the transformer /
    DDPM embedding of a step index in [0, 1000]), followed by a two-layer MLP."""

    def __init__(self, dim: int, t_min: float, t_max: float):
        super().__init__()
        if dim % 2 or dim < 2:
            raise ValueError(f"the time embedding dimension must be even and >= 2, got {dim}")
        if not (0 < t_min < t_max):
            raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
        self.log_t_min = math.log(t_min)
        self.log_span = math.log(t_max) - math.log(t_min)
        half = dim // 2
        self.register_buffer(
            "freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False
        )
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        c = 1000.0 * (torch.log(t) - self.log_t_min) / self.log_span
        arg = c[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([torch.sin(arg), torch.cos(arg)], dim=1))


class _MLPBlock(nn.Module):
    def __init__(self, hidden: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, e):
        y = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(e)
        return h + self.fc2(nn.functional.silu(y))


class MLPNet(nn.Module):
    """Residual MLP ``eps(x, t)`` for vector data of dimension ``dim``.

    ``x -> Linear(dim, hidden) -> depth x [h + W2 silu(W1 silu(LN h) + E e_t)] ->
    LN -> silu -> Linear(hidden, dim)``, ``e_t`` the time embedding.
    """

    def __init__(
        self,
        dim: int,
        t_min: float,
        t_max: float,
        hidden: int = 512,
        depth: int = 3,
        emb_dim: int = 128,
    ):
        super().__init__()
        self.dim = int(dim)
        self.time = SinusoidalTimeEmbedding(emb_dim, t_min, t_max)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_MLPBlock(hidden, emb_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.time(t)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(nn.functional.silu(self.norm(h)))


class _ConvBlock(nn.Module):
    def __init__(self, channels: int, emb: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = nn.Linear(emb, channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h, e):
        y = self.conv1(nn.functional.silu(self.norm1(h))) + self.emb(e)[:, :, None, None]
        return h + self.conv2(nn.functional.silu(self.norm2(y)))


class ConvNet(nn.Module):
    """Small residual convolutional ``eps(x, t)`` for images of shape ``(C, H, W)``.

    Flat rows of length ``C H W`` in and out. ``conv3x3 -> depth x residual block
    (GroupNorm, SiLU, conv3x3, + per-channel time embedding, GroupNorm, SiLU,
    conv3x3) -> GroupNorm -> SiLU -> conv3x3``, at full resolution (no down-sampling:
    meant for small images, up to about 32x32). A final linear layer over the whole
    image is added to the convolutional output (``global_mix``, on by default),
    because the kernel ``M_t`` of a non-isotropic process mixes all pixels and a
    stack of 3x3 convolutions only sees a neighbourhood.
    """

    def __init__(
        self,
        shape,
        t_min: float,
        t_max: float,
        channels: int = 64,
        depth: int = 4,
        emb_dim: int = 128,
        global_mix: bool = True,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"ConvNet needs an image shape (C, H, W), got {shape}")
        self.shape = shape
        self.dim = int(np.prod(shape))
        groups = math.gcd(channels, 8)
        self.time = SinusoidalTimeEmbedding(emb_dim, t_min, t_max)
        self.inp = nn.Conv2d(shape[0], channels, 3, padding=1)
        self.blocks = nn.ModuleList(_ConvBlock(channels, emb_dim, groups) for _ in range(depth))
        self.norm = nn.GroupNorm(groups, channels)
        self.out = nn.Conv2d(channels, shape[0], 3, padding=1)
        self.mix = nn.Linear(self.dim, self.dim) if global_mix else None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.time(t)
        h = self.inp(x.reshape(-1, *self.shape))
        for block in self.blocks:
            h = block(h, e)
        y = self.out(nn.functional.silu(self.norm(h))).reshape(x.shape[0], self.dim)
        return y if self.mix is None else y + self.mix(x)


NETWORKS = {"mlp": MLPNet, "conv": ConvNet}


def build_network(kind: str, *, dim: int, shape, t_min: float, t_max: float, **arch) -> nn.Module:
    """A network of ``kind`` (``mlp`` or ``conv``) for data of dimension ``dim``
    (``shape`` = (C, H, W) for images, None for vectors) over ``[t_min, t_max]``.

    ``arch``: the keyword arguments of the class (``hidden``, ``depth``,
    ``emb_dim`` for ``mlp``; ``channels``, ``depth``, ``emb_dim``, ``global_mix``
    for ``conv``).
    """
    if kind == "mlp":
        return MLPNet(dim, t_min, t_max, **arch)
    if kind == "conv":
        if shape is None:
            raise ValueError("network 'conv' needs image-shaped data (C, H, W); use 'mlp'")
        if int(np.prod(shape)) != dim:
            raise ValueError(f"image shape {tuple(shape)} does not match dimension {dim}")
        return ConvNet(shape, t_min, t_max, **arch)
    raise ValueError(f"network must be one of {', '.join(NETWORKS)}; got {kind!r}")
