"""On-the-fly augmentation that imitates how handwriting varies, on whole batches.

Everything runs on the batch's device with one `grid_sample` per batch, so it
costs little next to the forward pass on a GPU and stays affordable on a CPU.
Randomness comes from an explicit generator: a run seeded the same way
augments the same way, which makes `--resume` exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random distortions (each drawn uniformly per image)."""

    rotate_deg: float = 12.0  # people tilt digits by a few degrees either way
    scale: float = 0.12  # +/- relative size
    shear_deg: float = 10.0  # slanted handwriting
    translate_px: float = 2.5  # MNIST centres by mass, which still wobbles by a pixel or two
    elastic_alpha_px: float = 1.5  # peak displacement of the smooth elastic field
    elastic_grid: int = 4  # control points per side: lower = smoother, wobblier strokes
    stroke_prob: float = 0.3  # share of images whose strokes get thicker or thinner
    # Share of images seen as a low-resolution scan (an 8x8 or 16x16 digit upscaled by
    # preprocess): real digits by other writers often come like that, and a network that never
    # saw the blur embeds them poorly. The digit's 20-pixel box shrinks to a side drawn from
    # [lowres_min_box, lowres_max_box] pixels (one per batch), half the time also thresholded
    # to 1 bit, then goes back to 28x28 with bilinear interpolation as preprocess upscales.
    lowres_prob: float = 0.0
    lowres_min_box: int = 7
    lowres_max_box: int = 16

    def to_json(self) -> dict:
        return self.__dict__.copy()


def _uniform(n: int, half_width: float, gen: torch.Generator, device: torch.device):
    return (torch.rand(n, generator=gen, device=device) * 2 - 1) * half_width


def affine_theta(n: int, cfg: AugmentConfig, gen: torch.Generator, device: torch.device):
    """Random N x 2 x 3 affine matrices in `affine_grid`'s normalised coordinates."""
    rot = _uniform(n, math.radians(cfg.rotate_deg), gen, device)
    shear = _uniform(n, math.radians(cfg.shear_deg), gen, device)
    scale = 1 + _uniform(n, cfg.scale, gen, device)
    shift = _uniform(2 * n, cfg.translate_px * 2 / 28, gen, device).view(n, 2)
    cos, sin, tan = torch.cos(rot), torch.sin(rot), torch.tan(shear)
    # Rotation times horizontal shear, divided by scale (theta maps output to input coordinates).
    a = torch.stack([cos, cos * tan - sin, sin, sin * tan + cos], dim=1).view(n, 2, 2)
    a = a / scale.view(n, 1, 1)
    return torch.cat([a, shift.view(n, 2, 1)], dim=2)


def elastic_field(n: int, cfg: AugmentConfig, gen: torch.Generator, device: torch.device):
    """A smooth random displacement field N x 28 x 28 x 2 (normalised coordinates)."""
    coarse = torch.randn(n, 2, cfg.elastic_grid, cfg.elastic_grid, generator=gen, device=device)
    field = F.interpolate(coarse, size=(28, 28), mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1) * (cfg.elastic_alpha_px * 2 / 28 / 2)


def _extreme3x3(x: torch.Tensor, op, pad: float) -> torch.Tensor:
    """3 x 3 max (or min) filter, "same" size: a row pass then a column pass of shifted views.

    The same values as ``max_pool2d(x, 3, stride=1, padding=1)`` (max and min are exact),
    several times faster on a CPU than its pooling kernel on one-channel images.
    """
    p = F.pad(x, (1, 1, 1, 1), value=pad)
    rows = op(op(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return op(op(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def change_strokes(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Thicken (grey dilation) or thin (grey erosion) a random subset of images, blended."""
    n = x.shape[0]
    pick = torch.rand(n, generator=gen, device=x.device)
    amount = torch.rand(n, generator=gen, device=x.device).view(n, 1, 1, 1)
    thick = _extreme3x3(x, torch.maximum, -math.inf)
    thin = _extreme3x3(x, torch.minimum, math.inf)
    half = cfg.stroke_prob / 2
    target = torch.where((pick < half).view(n, 1, 1, 1), thick, x)
    target = torch.where(((pick >= half) & (pick < cfg.stroke_prob)).view(n, 1, 1, 1), thin, target)
    return x + amount * (target - x)


def low_resolution(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """A random subset of the batch scanned at a low resolution and upscaled back."""
    n = x.shape[0]
    pick = (torch.rand(n, generator=gen, device=x.device) < cfg.lowres_prob).view(n, 1, 1, 1)
    binary = (torch.rand(n, generator=gen, device=x.device) < 0.5).view(n, 1, 1, 1)
    span = cfg.lowres_max_box - cfg.lowres_min_box + 1
    box = cfg.lowres_min_box + int(torch.randint(span, (1,), generator=gen, device=x.device))
    side = max(2, round(28 * box / 20))  # the whole 28-pixel frame at that scale
    small = F.interpolate(x, size=(side, side), mode="area")
    small = torch.where(binary, (small > 0.35).to(x.dtype), small)  # keeps thin strokes whole
    back = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    return torch.where(pick, back, x)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Distort a batch N x 1 x 28 x 28 of [0, 1] pixels."""
    n = x.shape[0]
    grid = F.affine_grid(affine_theta(n, cfg, gen, x.device), list(x.shape), align_corners=False)
    if cfg.elastic_alpha_px > 0:
        grid = grid + elastic_field(n, cfg, gen, x.device)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.stroke_prob > 0:
        x = change_strokes(x, cfg, gen)
    if cfg.lowres_prob > 0:
        x = low_resolution(x, cfg, gen)
    return x.clamp_(0, 1)
