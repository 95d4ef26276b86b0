"""Fabric images: colour (one dye, or colour blocks for ``multicolor``), a motif layer and a weave.

A fabric is painted over the garment's bounding box of a full-size canvas and later pasted through the
garment's mask, so motifs are clipped by the garment outline like a real print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

from model_training.synthetic.motifs import MOTIFS
from model_training.synthetic.palette import RGB, luminance, mix, shade

Box = tuple[float, float, float, float]


@dataclass
class FabricSpec:
    colours: list[RGB]  # one colour, or several for colour blocks
    motif: str | None = None  # a key of MOTIFS, "checks", "stripes" or None
    arrangement: str = "none"  # none | small | scatter | allover | placement
    inks: list[RGB] = field(default_factory=lambda: [(255, 255, 255)])
    ink_strength: float = 1.0  # 1 = inks as given, lower blends them into the base colour
    weave: str = "none"  # none | knit | jacquard | weave
    size: float = 1.0  # motif size multiplier


@cache
def _knit_tile(period: int) -> np.ndarray:
    """Knit stitch mask: columns of V-shaped stitches (255 on the stitch edges), tiled over the fabric."""
    y, x = np.mgrid[0:period, 0:period]
    half = period / 2
    v = np.abs((y + np.abs(x % period - half)) % period - half) / half  # chevrons
    rib = np.abs(x % period - half) / half  # column edges
    return (np.clip(1.6 * (1 - v) + 0.6 * rib - 0.9, 0, 1) * 200).astype(np.uint8)


def _blocks(d: ImageDraw.ImageDraw, box: Box, colours: list[RGB], rng: np.random.Generator) -> None:
    """Colour blocks for multicolour fabric: diagonal or horizontal panels cycling through the colours."""
    x0, y0, x1, y1 = box
    h = y1 - y0
    n = 3 + int(rng.integers(3))
    step = h / n
    slant = (x1 - x0) * rng.uniform(-0.4, 0.4)
    for i in range(n):
        a, b = y0 + i * step, y0 + (i + 1) * step
        d.polygon([(x0, a), (x1, a + slant), (x1, b + slant + 2), (x0, b + 2)], fill=colours[i % len(colours)])


def clip_box(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return (max(0, x0), max(0, y0), max(max(0, x0) + 1, min(size[0], x1)), max(max(0, y0) + 1, min(size[1], y1)))


def paint_fabric(size: tuple[int, int], box: Box, spec: FabricSpec, rng: np.random.Generator,
                 chest: tuple[float, float, float] | None = None) -> Image.Image:
    """The fabric covering ``box`` of a ``size`` canvas, as an image of the box's size (paste it at the
    box's corner); ``chest`` is (x, y, radius) in canvas pixels for placed prints.

    Only the box is painted because most of the canvas is background, and pasting less is faster.
    """
    bx, by, bx1, by1 = clip_box(box, size)
    img = Image.new("RGB", (bx1 - bx, by1 - by), spec.colours[0])
    d = ImageDraw.Draw(img)
    box = (0, 0, bx1 - bx, by1 - by)
    if chest is not None:
        chest = (chest[0] - bx, chest[1] - by, chest[2])
    if len(spec.colours) > 1:
        d.rectangle(box, fill=spec.colours[0])
        _blocks(d, box, spec.colours, rng)
    base = spec.colours[0]
    inks = [mix(base, c, spec.ink_strength) for c in spec.inks]
    width = box[2] - box[0]
    if spec.motif == "checks":
        step = max(8, int(width / 9 * spec.size))
        for i, x in enumerate(range(box[0], box[2], step)):
            d.rectangle((x, box[1], x + step // 4, box[3]), fill=inks[i % len(inks)])
        for i, y in enumerate(range(box[1], box[3], step)):
            d.rectangle((box[0], y, box[2], y + step // 4), fill=inks[(i + 1) % len(inks)])
    elif spec.motif == "stripes":
        step = max(6, int(width / 12 * spec.size))
        for i, y in enumerate(range(box[1], box[3], step)):
            d.rectangle((box[0], y, box[2], y + step // 2), fill=inks[i % len(inks)])
    elif spec.motif is not None and spec.arrangement != "none":
        _place_motifs(d, box, spec, inks, rng, chest)
    if spec.weave == "jacquard":
        tone = shade(base, 1.18) if sum(base) < 380 else shade(base, 0.85)
        step = max(10, width // 10)
        for x in range(box[0] - (box[3] - box[1]), box[2], step):  # a tonal diamond lattice
            d.line((x, box[1], x + (box[3] - box[1]), box[3]), fill=tone, width=2)
            d.line((x + (box[3] - box[1]), box[1], x, box[3]), fill=tone, width=2)
    elif spec.weave == "weave":
        tone = shade(base, 0.9)
        for y in range(box[1], box[3], 4):
            d.line((box[0], y, box[2], y), fill=tone, width=1)
    elif spec.weave == "knit":
        # stitches lighter than a dark yarn or darker than a light one, so knit shows on any colour
        period = max(5, width // 40)
        bw, bh = box[2] - box[0], box[3] - box[1]
        texture = np.tile(_knit_tile(period), (bh // period + 1, bw // period + 1))[:bh, :bw]
        tone = shade(base, 1.22) if luminance(base) < 90 else shade(base, 0.84)
        img.paste(tone, (0, 0), Image.fromarray(np.ascontiguousarray(texture), "L"))
    return img


def _place_motifs(d: ImageDraw.ImageDraw, box: Box, spec: FabricSpec, inks: list[RGB], rng: np.random.Generator,
                  chest: tuple[float, float, float] | None) -> None:
    assert spec.motif is not None
    draw = MOTIFS[spec.motif]
    width = box[2] - box[0]
    cx, cy, cr = chest if chest is not None else ((box[0] + box[2]) / 2, box[1] + (box[3] - box[1]) * 0.3,
                                                  width / 5)
    if spec.arrangement == "placement":
        draw(d, cx, cy, cr * spec.size, inks, rng)
    elif spec.arrangement == "small":
        draw(d, cx + cr * 0.55, cy - cr * 0.3, cr * 0.42 * spec.size, inks, rng)
    else:
        sparse = spec.arrangement == "scatter"
        r = width / (22 if sparse else 13) * spec.size
        step = r * (4.2 if sparse else 2.6)
        row = 0
        y = box[1] + step / 2
        while y < box[3] + r:
            x = box[0] + (step / 2 if row % 2 else 0)
            while x < box[2] + r:
                draw(d, x + rng.uniform(-0.1, 0.1) * step, y + rng.uniform(-0.1, 0.1) * step, r, inks, rng)
                x += step
            y += step
            row += 1
