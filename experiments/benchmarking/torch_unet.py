"""The PyTorch twin of :class:`vaejax.models.unet.UNet` and of the DDPM training step, for the
benchmark and the equivalence tests (optional: needs the ``bench`` extra, i.e. ``torch``).

:class:`TorchUNet` is the same network, layer for layer: 'SAME' convolutions (a stride-2 one
padded as XLA pads it, none in front and one behind on even sizes), GroupNorm with flax's
epsilon (1e-6), the scale-shift time embedding, nearest-neighbour upsampling and the skips
concatenated after the upsampled features. :func:`load_flax_unet_params` copies a flax tree
into it, :func:`flax_unet_gradients` reads the ``.grad`` back as a flax tree, and
:func:`ddpm_step` is the experiment's update (noise-prediction MSE, gradients clipped to global
norm 1, Adam with a linear warmup, an EMA of the parameters).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaejax.models.layers import _same_padding

GROUP_NORM_EPS = 1e-6  # flax.linen.GroupNorm's default


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """:func:`vaejax.models.unet.timestep_embedding`: [B] -> [B, dim], sines then cosines."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class SameConv(nn.Conv2d):
    """A 'SAME' convolution, padded as XLA pads it (asymmetric where the total is odd)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__(c_in, c_out, kernel, stride, padding=0)

    def forward(self, x):
        _, (top, bottom) = _same_padding(x.shape[2], self.kernel_size[0], self.stride[0])
        _, (left, right) = _same_padding(x.shape[3], self.kernel_size[1], self.stride[1])
        return super().forward(F.pad(x, (left, right, top, bottom)))


class TorchResidualBlock(nn.Module):
    """:class:`vaejax.models.unet.ResidualBlock`; ``FLAX`` names each part's flax module."""

    FLAX = {
        "conv0": "Conv2D_0",
        "norm0": "GroupNorm_0",
        "embed": "Dense_0",
        "norm1": "GroupNorm_1",
        "conv1": "Conv2D_1",
        "skip": "Conv2D_2",
    }

    def __init__(self, c_in: int, channels: int, embedding_dim: int, groups: int):
        super().__init__()
        self.norm0 = nn.GroupNorm(groups, c_in, eps=GROUP_NORM_EPS)
        self.conv0 = SameConv(c_in, channels)
        self.embed = nn.Linear(embedding_dim, 2 * channels)
        self.norm1 = nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)
        self.conv1 = SameConv(channels, channels)
        self.skip = SameConv(c_in, channels, 1) if c_in != channels else None

    def forward(self, x, embedding):
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.embed(F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
        h = self.norm1(h) * (1.0 + scale) + shift
        h = self.conv1(F.silu(h))
        return (x if self.skip is None else self.skip(x)) + h


class TorchUNet(nn.Module):
    """:class:`vaejax.models.unet.UNet`: (x_t [B, C, H, W], t [B]) -> predicted noise."""

    def __init__(
        self,
        image_channels: int = 1,
        channels: int = 32,
        multipliers: Sequence[int] = (1, 2, 2),
        groups: int = 8,
    ):
        super().__init__()
        self.channels, self.multipliers = channels, tuple(multipliers)
        width = 4 * channels
        # flax builds the outer Dense of Dense(4c)(swish(Dense(4c)(e))) first: it is Dense_0
        self.embed_in, self.embed_out = nn.Linear(channels, width), nn.Linear(width, width)
        self.flax = {"embed_out": "Dense_0", "embed_in": "Dense_1"}
        convs, blocks = [("conv_in", SameConv(image_channels, channels))], []
        c = channels
        for level, multiplier in enumerate(self.multipliers):
            blocks.append(TorchResidualBlock(c, channels * multiplier, width, groups))
            c = channels * multiplier
            if level < len(self.multipliers) - 1:
                convs.append((f"down{level}", SameConv(c, c, 3, 2)))
        blocks += [TorchResidualBlock(c, c, width, groups) for _ in range(2)]
        for level in reversed(range(len(self.multipliers))):
            out = channels * self.multipliers[level]
            if level < len(self.multipliers) - 1:
                convs.append((f"up{level}", SameConv(c, out)))
                c = out
            blocks.append(TorchResidualBlock(c + out, out, width, groups))
            c = out
        self.norm_out = nn.GroupNorm(groups, c, eps=GROUP_NORM_EPS)
        convs.append(("conv_out", SameConv(c, image_channels)))
        self.convs = nn.ModuleDict(convs)
        self.blocks = nn.ModuleList(blocks)
        self.flax.update({f"convs.{name}": f"Conv2D_{i}" for i, (name, _) in enumerate(convs)})
        self.flax.update({f"blocks.{i}": f"ResidualBlock_{i}" for i in range(len(blocks))})
        self.flax["norm_out"] = "GroupNorm_0"

    def forward(self, x, t):
        embedding = timestep_embedding(t, self.channels)
        embedding = self.embed_out(F.silu(self.embed_in(embedding)))
        h = self.convs["conv_in"](x)
        blocks, skips = iter(self.blocks), []
        for level in range(len(self.multipliers)):
            h = next(blocks)(h, embedding)
            skips.append(h)
            if level < len(self.multipliers) - 1:
                h = self.convs[f"down{level}"](h)
        for _ in range(2):  # the middle
            h = next(blocks)(h, embedding)
        for level in reversed(range(len(self.multipliers))):
            if h.shape[2:] != skips[level].shape[2:]:
                h = self.convs[f"up{level}"](F.interpolate(h, scale_factor=2, mode="nearest"))
            h = next(blocks)(torch.cat([h, skips[level]], dim=1), embedding)
        return self.convs["conv_out"](F.silu(self.norm_out(h)))

    def flax_modules(self) -> list[tuple[nn.Module, tuple[str, ...]]]:
        """(torch layer, its path in the flax tree) for every layer with parameters."""
        pairs = []
        for name, path in self.flax.items():
            module = self.get_submodule(name)
            if isinstance(module, TorchResidualBlock):
                for part, flax_name in TorchResidualBlock.FLAX.items():
                    if getattr(module, part) is not None:
                        pairs.append((getattr(module, part), (path, flax_name)))
            else:
                pairs.append((module, (path,)))
        return pairs


def _to_torch(module: nn.Module, leaves: dict) -> dict[str, np.ndarray]:
    """A flax layer's leaves as the torch layer's {parameter name: array}."""
    if isinstance(module, nn.GroupNorm):
        return {"weight": leaves["scale"], "bias": leaves["bias"]}
    if isinstance(module, nn.Linear):
        return {"weight": leaves["kernel"].T, "bias": leaves["bias"]}
    return {"weight": leaves["kernel"].transpose(3, 2, 0, 1), "bias": leaves["bias"]}


def _to_flax(module: nn.Module, grads: dict) -> dict[str, np.ndarray]:
    if isinstance(module, nn.GroupNorm):
        return {"scale": grads["weight"], "bias": grads["bias"]}
    if isinstance(module, nn.Linear):
        return {"kernel": grads["weight"].T, "bias": grads["bias"]}
    return {"kernel": grads["weight"].transpose(2, 3, 1, 0), "bias": grads["bias"]}


def load_flax_unet_params(net: TorchUNet, params) -> TorchUNet:
    """Copies a :class:`vaejax.models.unet.UNet` parameter tree of the same shape into ``net``."""
    with torch.no_grad():
        for module, path in net.flax_modules():
            leaves = params
            for key in path:
                leaves = leaves[key]
            for name, value in _to_torch(
                module, {k: np.asarray(v) for k, v in leaves.items()}
            ).items():
                getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return net


def flax_unet_gradients(net: TorchUNet) -> dict:
    """The ``.grad`` of ``net``'s parameters as a flax tree (numpy)."""
    tree: dict = {}
    for module, path in net.flax_modules():
        grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = {k: np.ascontiguousarray(v) for k, v in _to_flax(module, grads).items()}
    return tree


def linear_alpha_bars(timesteps: int = 1000) -> torch.Tensor:
    """Ho et al.'s linear schedule (betas 1e-4 .. 0.02) as the products alpha_bar_t, float32."""
    betas = np.linspace(1e-4, 0.02, timesteps, dtype=np.float64)
    return torch.from_numpy(np.cumprod(1.0 - betas).astype(np.float32))


def ddpm_step(
    net: TorchUNet,
    *,
    learning_rate: float,
    warmup_steps: int,
    clip_norm: float,
    ema_decay: float,
    timesteps: int,
    device,
) -> Callable:
    """The experiment's update of ``net`` on a batch x_0 [B, C, H, W] in [-1, 1]: t uniform in
    [0, T), x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, the mean squared error of
    the predicted eps, gradients clipped to global norm ``clip_norm``, Adam (learning rate
    warmed up linearly over ``warmup_steps``), then the EMA (at vaejax's rate, min(decay, (1 +
    step) / (10 + step))). Returns ``step(x0) -> loss``."""
    alpha_bars = linear_alpha_bars(timesteps).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
    warmup = lambda i: min(1.0, i / warmup_steps) if warmup_steps else 1.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
    ema = [p.detach().clone() for p in net.parameters()]
    done = [0]

    def step(x0):
        t = torch.randint(0, timesteps, (len(x0),), device=device)
        noise = torch.randn_like(x0)
        a = alpha_bars[t][:, None, None, None]
        loss = F.mse_loss(net(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
        optimizer.step()
        scheduler.step()
        done[0] += 1
        rate = min(ema_decay, (1 + done[0]) / (10 + done[0]))  # vaejax.training.ema.ema_rate
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1 - rate)
        return loss.detach()

    return step
