"""Print and weave motifs, drawn in pixels with ImageDraw: one function per motif kind.

Each motif has a distinct silhouette (petals, leaves, a fanned tail, a trunk, a paisley curl, letters,
hard-edged geometry, faces, squiggles), so a CNN can tell the print types apart at thumbnail size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
from PIL import ImageDraw, ImageFont

from model_training.synthetic.palette import RGB

Ink = Sequence[RGB]
MotifFn = Callable[[ImageDraw.ImageDraw, float, float, float, Ink, np.random.Generator], None]

WORDS = ("COOL", "VIBES", "NYC", "LOVE", "BOSS", "WILD", "HAPPY", "DREAM", "RUN", "GOOD", "1994", "STAY")


@cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, size))


def _circle(d: ImageDraw.ImageDraw, x: float, y: float, r: float, fill: RGB | None = None,
            outline: RGB | None = None, width: int = 1) -> None:
    d.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=width)


def floral(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    petals = 5 + int(rng.integers(2))
    turn = rng.uniform(0, math.tau)
    for k in range(petals):
        a = turn + k * math.tau / petals
        _circle(d, x + 0.55 * r * math.cos(a), y + 0.55 * r * math.sin(a), 0.42 * r, fill=ink[0])
    _circle(d, x, y, 0.3 * r, fill=ink[1 % len(ink)])


def botanical(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    tilt = rng.uniform(-0.6, 0.6)
    dx, dy = math.sin(tilt), -math.cos(tilt)
    d.line((x - dx * r, y - dy * r, x + dx * r, y + dy * r), fill=ink[0], width=max(1, int(r / 8)))
    for k in range(4):
        t = -0.7 + k * 0.45
        px, py = x + dx * r * t, y + dy * r * t
        side = 1 if k % 2 else -1
        lx, ly = px + side * dy * 0.45 * r, py - side * dx * 0.45 * r
        d.ellipse((lx - 0.28 * r, ly - 0.14 * r, lx + 0.28 * r, ly + 0.14 * r), fill=ink[0])


def peacock(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    # a fan of tail feathers, each with an "eye", behind a teardrop body and a crested head
    for k in range(7):
        a = math.radians(200 + k * 23)
        fx, fy = x + 0.85 * r * math.cos(a), y - 0.05 * r + 0.85 * r * math.sin(a)
        d.line((x, y + 0.2 * r, fx, fy), fill=ink[0], width=max(1, int(r / 10)))
        _circle(d, fx, fy, 0.17 * r, fill=ink[1 % len(ink)])
        _circle(d, fx, fy, 0.07 * r, fill=ink[0])
    d.ellipse((x - 0.22 * r, y - 0.1 * r, x + 0.22 * r, y + 0.55 * r), fill=ink[0])
    _circle(d, x + 0.05 * r, y - 0.25 * r, 0.13 * r, fill=ink[0])
    d.line((x + 0.05 * r, y - 0.38 * r, x + 0.12 * r, y - 0.55 * r), fill=ink[0], width=max(1, int(r / 12)))


def elephant(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    c = ink[0]
    d.ellipse((x - 0.7 * r, y - 0.45 * r, x + 0.4 * r, y + 0.3 * r), fill=c)  # body
    _circle(d, x + 0.5 * r, y - 0.3 * r, 0.3 * r, fill=c)  # head
    d.ellipse((x + 0.2 * r, y - 0.55 * r, x + 0.5 * r, y - 0.05 * r), fill=ink[1 % len(ink)])  # ear
    d.line((x + 0.75 * r, y - 0.25 * r, x + 0.85 * r, y + 0.35 * r, x + 0.7 * r, y + 0.5 * r), fill=c,
           width=max(2, int(r / 7)))  # trunk
    for lx in (-0.55, -0.3, 0.05, 0.3):
        d.rectangle((x + lx * r, y + 0.1 * r, x + (lx + 0.16) * r, y + 0.65 * r), fill=c)


def _paisley_outline() -> list[tuple[float, float]]:
    pts = []
    for k in range(24):
        t = k / 23 * math.tau
        rr = 0.55 + 0.35 * math.cos(t)
        pts.append((rr * math.cos(t) * 0.8, rr * math.sin(t) * 0.6 - 0.1 * math.sin(2 * t)))
    return [*pts, (-0.9, -0.5)]


PAISLEY = _paisley_outline()


def paisley(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    # ethnic motif: a paisley teardrop with a curled tip and an inner dot ring
    d.polygon([(x + px * r, y + py * r) for px, py in PAISLEY], fill=ink[0])
    _circle(d, x + 0.25 * r, y, 0.22 * r, fill=ink[1 % len(ink)])
    for k in range(6):
        a = k * math.tau / 6
        _circle(d, x + 0.25 * r + 0.38 * r * math.cos(a), y + 0.38 * r * math.sin(a), 0.06 * r,
                fill=ink[1 % len(ink)])


def applique(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    # a sewn-on patch: a solid shape with a dashed stitch line just inside its edge
    shape = int(rng.integers(3))
    fill = ink[int(rng.integers(len(ink)))]
    if shape == 0:
        _circle(d, x, y, 0.8 * r, fill=fill)
    elif shape == 1:
        d.regular_polygon((x, y, 0.9 * r), 5, rotation=rng.uniform(0, 72), fill=fill)
    else:
        d.polygon([(x, y + 0.8 * r), (x - 0.85 * r, y - 0.1 * r), (x - 0.45 * r, y - 0.7 * r), (x, y - 0.3 * r),
                   (x + 0.45 * r, y - 0.7 * r), (x + 0.85 * r, y - 0.1 * r)], fill=fill)  # heart
    stitch = (250, 250, 245) if sum(fill) < 380 else (30, 30, 30)
    for k in range(0, 16, 2):
        a0, a1 = k * math.tau / 16, (k + 1) * math.tau / 16
        d.line((x + 0.6 * r * math.cos(a0), y + 0.6 * r * math.sin(a0), x + 0.6 * r * math.cos(a1),
                y + 0.6 * r * math.sin(a1)), fill=stitch, width=max(1, int(r / 12)))


def typography(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    word = WORDS[int(rng.integers(len(WORDS)))]
    size = int(1.9 * r / max(2, len(word)) * 1.6)
    d.text((x, y), word, fill=ink[0], font=font(size), anchor="mm")
    if r > 40:  # a big chest print gets a second, smaller line
        d.text((x, y + 0.55 * r), WORDS[int(rng.integers(len(WORDS)))], fill=ink[1 % len(ink)],
               font=font(size // 2), anchor="mm")


def graphic(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    # hard-edged geometry: a triangle, a ring and bars
    d.polygon([(x - 0.8 * r, y + 0.6 * r), (x, y - 0.8 * r), (x + 0.8 * r, y + 0.6 * r)], fill=ink[0])
    _circle(d, x, y + 0.15 * r, 0.35 * r, outline=ink[1 % len(ink)], width=max(2, int(r / 8)))
    for k in range(3):
        yy = y + (0.7 + 0.12 * k) * r
        d.rectangle((x - 0.8 * r, yy, x + 0.8 * r, yy + 0.06 * r), fill=ink[2 % len(ink)])


def quirky(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    # a cartoon face: round head, big eyes, a grin and antennae
    _circle(d, x, y, 0.75 * r, fill=ink[0])
    eye = (250, 250, 250)
    for s in (-1, 1):
        _circle(d, x + s * 0.28 * r, y - 0.15 * r, 0.17 * r, fill=eye)
        _circle(d, x + s * 0.28 * r, y - 0.12 * r, 0.08 * r, fill=(20, 20, 20))
        d.line((x + s * 0.3 * r, y - 0.7 * r, x + s * 0.5 * r, y - 1.0 * r), fill=ink[0], width=max(1, int(r / 10)))
    d.arc((x - 0.4 * r, y - 0.1 * r, x + 0.4 * r, y + 0.5 * r), 20, 160, fill=(20, 20, 20), width=max(1, int(r / 10)))


def funky(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    # squiggles and splats in several inks
    for k in range(3):
        yy = y + (k - 1) * 0.5 * r
        pts = [(x - r + i * r / 4, yy + (0.2 * r if i % 2 else -0.2 * r)) for i in range(9)]
        d.line(pts, fill=ink[k % len(ink)], width=max(2, int(r / 7)))
    _circle(d, x + rng.uniform(-0.5, 0.5) * r, y + rng.uniform(-0.5, 0.5) * r, 0.2 * r, fill=ink[-1])


def dots(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    _circle(d, x, y, 0.35 * r, fill=ink[0])


def butti(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    # the small woven dot-flower scattered on saree bodies
    for k in range(4):
        a = k * math.tau / 4 + math.pi / 4
        _circle(d, x + 0.3 * r * math.cos(a), y + 0.3 * r * math.sin(a), 0.2 * r, fill=ink[0])
    _circle(d, x, y, 0.15 * r, fill=ink[1 % len(ink)])


def diamond(d: ImageDraw.ImageDraw, x: float, y: float, r: float, ink: Ink, rng: np.random.Generator) -> None:
    d.polygon([(x, y - r), (x + 0.6 * r, y), (x, y + r), (x - 0.6 * r, y)], outline=ink[0], width=max(1, int(r / 6)))
    _circle(d, x, y, 0.15 * r, fill=ink[0])


MOTIFS: dict[str, MotifFn] = {
    "floral": floral, "botanical": botanical, "peacock": peacock, "elephant": elephant, "paisley": paisley,
    "applique": applique, "typography": typography, "graphic": graphic, "quirky": quirky, "funky": funky,
    "dots": dots, "butti": butti, "diamond": diamond,
}
