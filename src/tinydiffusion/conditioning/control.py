"""Control maps made from the data, for ControlNet (Zhang et al. 2023, sec. 4: Canny edges, HED, scribbles, ...):
Sobel edges thinned by non-maximum suppression and thresholded, the skeleton of the strokes (Zhang & Suen 1984 thinning) and a coarse 7x7 occupancy
sketch. Pure tensor functions: images (B, C, H, W) in [-1, 1] -> binary maps (B, 1, H, W) in {0, 1}, 1 = ink.

The network reads a map in the image convention, 2 m - 1 in {-1, 1} (`control_cond`); a map a user drew (a PNG
of any size) is resized to the image size and binarised (`map_from_image`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..registry import Registry
from .cond import Cond

INK = 0.5  # a pixel in [0, 1] above this is a stroke (binarising images and drawn maps)
EDGE_THRESHOLD = 0.5  # Sobel gradient magnitude, in units of a sharp 0 -> 1 step (which reaches 1)
SKETCH_CELLS, SKETCH_INK = 7, 0.15  # the sketch: a 7x7 grid, a cell is occupied when this share of it is ink


def _gray01(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, 1, H, W) in [0, 1]."""
    if x.dim() != 4:
        raise UserError(f"Control maps are made from image batches (B, C, H, W), got shape {tuple(x.shape)}.")
    return ((x.float().mean(1, keepdim=True) + 1) / 2).clamp(0, 1)


def edges(x: torch.Tensor) -> torch.Tensor:
    """Thin edges: the Sobel gradient (Sobel & Feldman 1968) of the [0, 1] image, kernels divided by 4 so a sharp step
    has magnitude 1, thinned by Canny's non-maximum suppression (Canny 1986: a pixel stays only where its magnitude
    is at least both neighbours' along the gradient direction, quantised to 0, 45, 90, 135 degrees), then thresholded
    at EDGE_THRESHOLD (one threshold: no hysteresis). Replicate padding: the border makes no edge."""
    g = _gray01(x)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    k = torch.stack([kx, kx.T])[:, None].to(g)  # (2, 1, 3, 3): d/dx, d/dy
    gx, gy = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k).unbind(1)  # each (B, H, W)
    mag = (gx.pow(2) + gy.pow(2)).sqrt()[:, None]  # (B, 1, H, W)
    angle = torch.atan2(gy, gx)[:, None] % torch.pi  # direction of the gradient in [0, pi)
    sector = ((angle + torch.pi / 8) // (torch.pi / 4)).long() % 4  # 0: 0 deg, 1: 45, 2: 90, 3: 135
    p = F.pad(mag, (1, 1, 1, 1))
    H, W = mag.shape[-2:]
    at = lambda di, dj: p[..., 1 + di:1 + di + H, 1 + dj:1 + dj + W]  # noqa: E731 - magnitude at (i+di, j+dj)
    steps = [(0, 1), (1, 1), (1, 0), (1, -1)]  # (di, dj) along each sector's direction (rows grow downwards)
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for d, (di, dj) in enumerate(steps):
        keep |= (sector == d) & (mag >= at(di, dj)) & (mag >= at(-di, -dj))
    return (keep & (mag > EDGE_THRESHOLD)).float()


def _neighbours(b: torch.Tensor) -> list[torch.Tensor]:
    """P2..P9 of Zhang & Suen (N, NE, E, SE, S, SW, W, NW) of a binary (B, 1, H, W) map, zero outside."""
    p = F.pad(b, (1, 1, 1, 1))
    H, W = b.shape[-2:]
    at = lambda di, dj: p[..., 1 + di:1 + di + H, 1 + dj:1 + dj + W]  # noqa: E731 - the pixel at (i+di, j+dj)
    return [at(-1, 0), at(-1, 1), at(0, 1), at(1, 1), at(1, 0), at(1, -1), at(0, -1), at(-1, -1)]


def skeleton(x: torch.Tensor) -> torch.Tensor:
    """The strokes thinned to one pixel: Zhang & Suen 1984 ("A fast parallel algorithm for thinning digital
    patterns"), both sub-iterations repeated until nothing changes. A pixel is removed when 2 <= B <= 6 (ink
    neighbours), A = 1 (one 0 -> 1 transition around P2..P9, P2) and, in sub-iteration 1, P2 P4 P6 = P4 P6 P8 = 0
    (in 2: P2 P4 P8 = P2 P6 P8 = 0)."""
    b = (_gray01(x) > INK).float()
    for _ in range(b.shape[-1] * b.shape[-2]):
        changed = False
        for first in (True, False):
            P2, P3, P4, P5, P6, P7, P8, P9 = n = _neighbours(b)
            count = sum(n)
            ring = n + [P2]
            transitions = sum((1 - ring[k]) * ring[k + 1] for k in range(8))
            if first:
                side = (P2 * P4 * P6 == 0) & (P4 * P6 * P8 == 0)
            else:
                side = (P2 * P4 * P8 == 0) & (P2 * P6 * P8 == 0)
            remove = (b > 0) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                b = b.masked_fill(remove, 0.0)
                changed = True
        if not changed:
            break
    return b


def sketch(x: torch.Tensor) -> torch.Tensor:
    """A coarse occupancy sketch: the image averaged over a 7x7 grid of cells (4x4 pixels at 28 px), a cell
    occupied when at least SKETCH_INK of it is ink, drawn back at full size (nearest)."""
    g = _gray01(x)
    cells = F.adaptive_avg_pool2d((g > INK).float(), SKETCH_CELLS)  # (B, 1, 7, 7): ink share per cell
    return F.interpolate((cells >= SKETCH_INK).float(), size=g.shape[-2:], mode="nearest")


CONTROL_MAPS = Registry("control map", " (see `tinydiffusion list control-maps`)")
CONTROL_MAPS.add("edges", edges, "Sobel edges of the digit thinned by non-maximum suppression, thresholded "
                  "(both sides of every stroke)")
CONTROL_MAPS.add("skeleton", skeleton, "the strokes thinned to one pixel (Zhang-Suen)")
CONTROL_MAPS.add("sketch", sketch, "a coarse 7x7 occupancy grid: where the digit has ink")


def control_map(kind: str, x: torch.Tensor) -> torch.Tensor:
    """The named map of images x (B, C, H, W) in [-1, 1]: (B, 1, H, W) in {0, 1}."""
    return CONTROL_MAPS.get(kind)(x)


def ink_bright(image01: torch.Tensor) -> torch.Tensor:
    """A drawing in [0, 1] with bright ink: a mostly light one (dark strokes on paper) is inverted."""
    return 1 - image01 if image01.mean() > 0.5 else image01


def map_from_image(image01: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A map the user drew, (C, h, w) or (B, C, h, w) in [0, 1] (ink bright), resized to `size` (area averaging,
    so thin strokes survive shrinking) and binarised at INK / 2: (B, 1, H, W) in {0, 1}."""
    x = image01[None] if image01.dim() == 3 else image01
    x = x.float().mean(1, keepdim=True)  # (B, C, h, w) -> (B, 1, h, w)
    if tuple(x.shape[-2:]) != tuple(size):
        mode = "area" if x.shape[-1] >= size[-1] else "bilinear"
        x = F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return (x > INK / 2).float()


def control_cond(maps: torch.Tensor, scale: float = 1.0, cond: Cond | None = None) -> Cond:
    """cond (labels or prompts, or none) with control maps (B, 1, H, W) in {0, 1} attached, as 2 m - 1, at `scale`."""
    fields = {} if cond is None else cond._tensors()
    return Cond(**{**fields, "control": maps.float() * 2 - 1,
                   "control_scale": torch.full((len(maps),), float(scale))})
