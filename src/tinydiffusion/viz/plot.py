"""Small line plots drawn with Pillow (no matplotlib): one function, `line_plot`, for every experiment."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageColor, ImageDraw, ImageFont

from ..io import atomic_write

# Colour-blind-safe palette (Okabe & Ito 2008), then greys.
COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#777777"]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:  # pragma: no cover - older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Tick positions in data units: 1-2-5 steps for linear axes, powers of ten (and 2, 5 x them) for log axes."""
    if log:
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        span = math.log10(hi / lo)  # decades shown: denser ticks when there are few
        mults = tuple(range(1, 10)) if span < 1 else (1, 2, 5) if span < 3.5 else (1,)
        return [m * 10.0**d for d in decades for m in mults if lo <= m * 10.0**d <= hi]
    raw = (hi - lo) / 5
    step = min((m * 10.0 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    return [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


def _label(v: float) -> str:
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.0e}"


def line_plot(series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, path: Path, *,
              logx: bool = False, logy: bool = False, title: str = "", size: tuple[int, int] = (720, 440)) -> Path:
    """Write a PNG with one line (with markers) per series {label: [(x, y), ...]}; a one-point series is a marker.
    Points that a log axis cannot show (<= 0) and non-finite points are left out."""
    def ok(x, y):
        return math.isfinite(x) and math.isfinite(y) and (x > 0 or not logx) and (y > 0 or not logy)

    series = {k: sorted((float(x), float(y)) for x, y in pts if ok(float(x), float(y))) for k, pts in series.items()}
    series = {k: pts for k, pts in series.items() if pts}
    W, H = size
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(15), _font(13)
    legend_w = 44 + max([draw.textlength(k, font=small) for k in series] + [0])
    left, right, top, bottom = 78, W - 16 - legend_w, 40 if title else 16, H - 56  # the plot box in pixels
    if title:
        draw.text(((left + right) / 2, 10), title, fill="black", font=font, anchor="ma")
    draw.rectangle([left, top, right, bottom], outline="black")
    if not series:
        draw.text(((left + right) / 2, (top + bottom) / 2), "no data", fill="gray", font=font, anchor="mm")
        atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))
        return Path(path)

    # 1. data ranges, padded so markers do not sit on the frame
    fx = (lambda v: math.log10(v)) if logx else (lambda v: v)  # noqa: E731
    fy = (lambda v: math.log10(v)) if logy else (lambda v: v)  # noqa: E731
    xs = [fx(x) for pts in series.values() for x, _ in pts]
    ys = [fy(y) for pts in series.values() for _, y in pts]
    pad = lambda v: 0.05 * (max(v) - min(v) or 1)  # noqa: E731  (a flat series still gets a range)
    (x0, x1), (y0, y1) = [(min(v) - pad(v), max(v) + pad(v)) for v in (xs, ys)]
    px = lambda v: left + (fx(v) - x0) / (x1 - x0) * (right - left)  # noqa: E731  data -> pixel
    py = lambda v: bottom - (fy(v) - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
    inv = lambda v, log: 10**v if log else v  # noqa: E731

    # 2. grid and tick labels
    for v in _ticks(inv(x0, logx), inv(x1, logx), logx):
        draw.line([px(v), top, px(v), bottom], fill="#e4e4e4")
        draw.text((px(v), bottom + 6), _label(v), fill="black", font=small, anchor="ma")
    for v in _ticks(inv(y0, logy), inv(y1, logy), logy):
        draw.line([left, py(v), right, py(v)], fill="#e4e4e4")
        draw.text((left - 6, py(v)), _label(v), fill="black", font=small, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline="black")
    xtitle = xlabel + (" (log scale)" if logx else "")
    draw.text(((left + right) / 2, H - 8), xtitle, fill="black", font=font, anchor="md")
    label = Image.new("RGB", (int(draw.textlength(ylabel, font=font)) + 4, 20), "white")
    ImageDraw.Draw(label).text((2, 1), ylabel, fill="black", font=font)
    label = label.rotate(90, expand=True)  # (20, w) -> vertical text along the y axis
    img.paste(label, (6, int((top + bottom - label.height) / 2)))

    # 3. lines, markers and the legend
    for k, (name, pts) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        xy = [(px(x), py(y)) for x, y in pts]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2)
        for x, y in xy:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        ly = top + 8 + 20 * k
        draw.line([right + 12, ly + 7, right + 30, ly + 7], fill=color, width=2)
        draw.ellipse([right + 17, ly + 3, right + 25, ly + 11], fill=color)
        draw.text((right + 36, ly), name, fill="black", font=small)
    atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))
    return Path(path)


# ------------------------------------------------------------------------------------- figure panels
# The lessons' figures (viz) need what a report plot does not: reference lines and bands with labels, a plot
# returned as an image so several panels and a caption can be composed, and smooth lines (drawn at SS x size).
SS = 2  # supersampling factor


@dataclass
class Line:
    """One data series; markers puts a dot on every point (for short series such as per-bin values)."""
    x: Sequence[float]
    y: Sequence[float]
    label: str = ""
    color: str = COLORS[0]
    width: int = 2
    markers: bool = False


@dataclass
class Ref:
    """A dashed reference: a horizontal line (y), a vertical line (x) or a shaded band (y to y2), labelled."""
    y: float | None = None
    x: float | None = None
    y2: float | None = None
    label: str = ""
    color: str = COLORS[8]


def _data_range(values: list[float], log: bool, pad: float) -> tuple[float, float]:
    vals = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not vals:
        return (0.1, 1.0) if log else (0.0, 1.0)
    lo, hi = (math.log10(min(vals)), math.log10(max(vals))) if log else (min(vals), max(vals))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    lo, hi = lo - pad * (hi - lo), hi + pad * (hi - lo)
    return (10**lo, 10**hi) if log else (lo, hi)


def line_plot_image(lines: Sequence[Line], *, title: str = "", xlabel: str = "", ylabel: str = "",
                    logy: bool = False, refs: Sequence[Ref] = (), xlim=None, ylim=None,
                    size: tuple[int, int] = (560, 380), integer_x: bool = False) -> Image.Image:
    """An RGB image of `size` pixels: lines, reference lines/bands, legend in the emptiest corner.
    integer_x keeps x ticks on whole numbers (steps)."""
    W, H = size[0] * SS, size[1] * SS
    f_tick, f_label, f_title = _font(11 * SS), _font(12 * SS), _font(13 * SS)
    box = (62 * SS, (30 if title else 12) * SS, W - 14 * SS, H - 46 * SS)  # the plot area in pixels
    bw, bh = box[2] - box[0], box[3] - box[1]

    # 1. data ranges (reference lines and bands count, so they are always in view)
    xs = [float(v) for ln in lines for v in ln.x] + [r.x for r in refs if r.x is not None]
    ys = [float(v) for ln in lines for v in ln.y]
    ys += [v for r in refs if r.x is None for v in (r.y, r.y2) if v is not None]
    x0, x1 = xlim or _data_range(xs, False, pad=0.0)
    y0, y1 = ylim or _data_range(ys, logy, pad=0.05)
    ly0, ly1 = (math.log10(y0), math.log10(y1)) if logy else (y0, y1)

    def X(v):
        return box[0] + (v - x0) / (x1 - x0) * bw

    def Y(v):
        v = math.log10(max(v, 1e-300)) if logy else v
        return box[3] - (v - ly0) / (ly1 - ly0) * bh

    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)

    # 2. grid and ticks
    for v in _ticks(y0, y1, logy):
        draw.line([(box[0], Y(v)), (box[2], Y(v))], fill="#e4e4e4", width=SS)
        draw.text((box[0] - 6 * SS, Y(v)), _label(v), font=f_tick, fill="black", anchor="rm")
    for v in [v for v in _ticks(x0, x1, False) if not integer_x or float(v).is_integer()]:
        draw.line([(X(v), box[1]), (X(v), box[3])], fill="#e4e4e4", width=SS)
        draw.text((X(v), box[3] + 5 * SS), _label(v), font=f_tick, fill="black", anchor="mt")

    # 3. bands, reference lines and data on a layer the size of the box, so everything is clipped to it
    layer = img.crop(box)
    ld = ImageDraw.Draw(layer, "RGBA")
    for r in refs:
        if r.y is not None and r.y2 is not None:
            ld.rectangle([0, Y(r.y2) - box[1], bw, Y(r.y) - box[1]], fill=(*ImageColor.getrgb(r.color), 45))
        elif r.y is not None:
            _dashed(ld, (0, Y(r.y) - box[1]), (bw, Y(r.y) - box[1]), r.color)
        elif r.x is not None:
            _dashed(ld, (X(r.x) - box[0], 0), (X(r.x) - box[0], bh), r.color)
    points = [(X(float(a)), Y(float(b))) for ln in lines for a, b in zip(ln.x, ln.y)
              if math.isfinite(float(b)) and (float(b) > 0 or not logy)]
    for ln in lines:
        pts = [(X(float(a)) - box[0], Y(float(b)) - box[1]) for a, b in zip(ln.x, ln.y)
               if math.isfinite(float(b)) and (float(b) > 0 or not logy)]
        if len(pts) > 1:
            ld.line(pts, fill=ln.color, width=ln.width * SS, joint="curve")
        if ln.markers or len(pts) == 1:
            for px, py in pts:
                ld.ellipse([px - 3 * SS, py - 3 * SS, px + 3 * SS, py + 3 * SS], fill=ln.color)
    img.paste(layer, box[:2])
    draw.rectangle(box, outline="black", width=SS)

    # 4. reference labels on white, at whichever end of a horizontal line crosses fewer data points
    for r in refs:
        if r.label and r.x is not None:
            _boxed_text(draw, (X(r.x) + 4 * SS, box[1] + 4 * SS), r.label, f_tick, r.color, "lt")
        elif r.label and r.y is not None:
            yy = Y(r.y2 if r.y2 is not None else r.y) - 3 * SS
            ends = [((box[0] + 6 * SS, yy), "lb"), ((box[2] - 6 * SS, yy), "rb")]
            xy, anchor = min(ends, key=lambda e: _covered(draw.textbbox(e[0], r.label, font=f_tick, anchor=e[1]),
                                                          points, 4 * SS))
            _boxed_text(draw, xy, r.label, f_tick, r.color, anchor)

    # 5. title, axis labels, legend
    if title:
        draw.text((W // 2, 8 * SS), title, font=f_title, fill="black", anchor="mt")
    if xlabel:
        draw.text(((box[0] + box[2]) // 2, H - 6 * SS), xlabel, font=f_label, fill="black", anchor="mb")
    if ylabel:
        tag = Image.new("RGB", (int(f_label.getlength(ylabel)) + 4, 16 * SS), "white")
        ImageDraw.Draw(tag).text((2, 0), ylabel, font=f_label, fill="black")
        tag = tag.rotate(90, expand=True)  # (16 SS, w) -> vertical text along the y axis
        img.paste(tag, (4 * SS, max(0, (box[1] + box[3]) // 2 - tag.height // 2)))
    _legend(draw, [ln for ln in lines if ln.label], box, f_tick, points)
    return img.resize(size, Image.LANCZOS)


def _covered(rect, points, pad) -> int:
    """How many points fall inside rect (x0, y0, x1, y1) grown by pad."""
    x0, y0, x1, y1 = rect
    return sum(x0 - pad <= px <= x1 + pad and y0 - pad <= py <= y1 + pad for px, py in points)


def _boxed_text(draw, xy, text, fnt, color, anchor):
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=fnt, anchor=anchor)
    draw.rectangle([x0 - 2 * SS, y0 - SS, x1 + 2 * SS, y1 + SS], fill="white")
    draw.text(xy, text, font=fnt, fill=color, anchor=anchor)


def _dashed(draw, p, q, color, dash=8 * SS, gap=6 * SS):
    (xa, ya), (xb, yb) = p, q
    length = math.hypot(xb - xa, yb - ya) or 1.0
    for k in range(int(length // (dash + gap)) + 1):
        s, e = k * (dash + gap) / length, min(1.0, (k * (dash + gap) + dash) / length)
        draw.line([(xa + s * (xb - xa), ya + s * (yb - ya)), (xa + e * (xb - xa), ya + e * (yb - ya))],
                  fill=color, width=2 * SS)


def _legend(draw, lines, box, fnt, points):
    """Legend in whichever corner of the box covers the fewest data points."""
    if not lines:
        return
    row, pad = 16 * SS, 8 * SS
    w, h = int(max(fnt.getlength(ln.label) for ln in lines)) + 34 * SS, row * len(lines) + 8 * SS
    corners = [(box[2] - w - pad, box[1] + pad), (box[0] + pad, box[1] + pad),
               (box[2] - w - pad, box[3] - h - pad), (box[0] + pad, box[3] - h - pad)]
    lx, ly = min(corners, key=lambda c: _covered((c[0], c[1], c[0] + w, c[1] + h), points, 0))
    draw.rectangle([lx, ly, lx + w, ly + h], fill="white", outline=COLORS[8], width=SS)
    for k, ln in enumerate(lines):
        y = ly + 4 * SS + k * row + row // 2
        draw.line([(lx + 6 * SS, y), (lx + 26 * SS, y)], fill=ln.color, width=3 * SS)
        draw.text((lx + 30 * SS, y), ln.label, font=fnt, fill="black", anchor="lm")
