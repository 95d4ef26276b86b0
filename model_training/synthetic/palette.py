"""Fabric colours: every named colour of the taxonomy, ``default`` and ``multicolor``.

``default`` in the label table means "a colour the taxonomy does not name", so it draws from hues kept
away from the named ones; ``multicolor`` gives several distinct named colours (colour blocks).
"""

from __future__ import annotations

import numpy as np

RGB = tuple[int, int, int]

NAMED: dict[str, RGB] = {
    "black": (28, 28, 30),
    "white": (242, 242, 238),
    "red": (200, 24, 32),
    "maroon": (112, 18, 36),
    "navy blue": (22, 32, 92),
    "blue": (40, 100, 210),
    "yellow": (242, 206, 40),
    "green": (36, 140, 60),
    "pink": (240, 140, 180),
    "purple": (112, 44, 140),
    "grey": (128, 128, 132),
    "orange": (240, 120, 24),
    "cream": (238, 226, 192),
    "peach": (250, 190, 150),
}

# Hues no named colour uses: teal, olive, turquoise, brown, lavender, mint, mustard-brown.
DEFAULT_COLOURS: tuple[RGB, ...] = (
    (0, 118, 118), (110, 112, 30), (64, 196, 196), (120, 80, 50), (176, 160, 224), (170, 228, 196),
    (170, 120, 40),
)

GOLD: RGB = (214, 176, 74)
SILVER: RGB = (214, 216, 224)
SKIN_TONES: tuple[RGB, ...] = ((236, 200, 170), (214, 168, 130), (180, 130, 96), (140, 96, 68), (226, 186, 150))
BACKDROPS: tuple[RGB, ...] = (
    (236, 236, 236), (226, 222, 214), (246, 240, 232), (214, 222, 230), (232, 226, 236), (208, 208, 204),
    (240, 232, 220), (222, 232, 222),
)
TROUSERS: tuple[RGB, ...] = ((44, 70, 120), (30, 30, 34), (196, 180, 150), (90, 90, 96), (236, 236, 230))


def colour_of(name: str, rng: np.random.Generator) -> RGB:
    """The fabric colour for a taxonomy colour value (``multicolor`` gives its first block)."""
    if name in NAMED:
        return NAMED[name]
    if name == "multicolor":
        return multicolour(rng)[0]
    return DEFAULT_COLOURS[int(rng.integers(len(DEFAULT_COLOURS)))]


def multicolour(rng: np.random.Generator, n: int = 3) -> list[RGB]:
    """``n`` clearly different named colours (no two nearly the same), for colour-block fabric."""
    names = [k for k in NAMED if k not in ("cream", "peach")]
    order = rng.permutation(len(names))
    picked: list[RGB] = []
    for i in order:
        c = NAMED[names[int(i)]]
        if all(sum(abs(a - b) for a, b in zip(c, p, strict=True)) > 160 for p in picked):
            picked.append(c)
        if len(picked) == n:
            break
    return picked


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """``a`` moved a fraction ``t`` towards ``b``."""
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def shade(c: RGB, f: float) -> RGB:
    """Darker (``f < 1``) or lighter (``f > 1``, towards white) version of ``c``."""
    if f <= 1:
        return (round(c[0] * f), round(c[1] * f), round(c[2] * f))
    return mix(c, (255, 255, 255), min(1.0, f - 1))


def tone(c: RGB, amount: float = 0.35) -> RGB:
    """A same-hue trim colour that stays visible: darker on light fabric, lighter on dark fabric."""
    return shade(c, 1 - amount) if luminance(c) > 90 else shade(c, 1 + amount * 1.3)


def luminance(c: RGB) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def contrast_ink(base: RGB, rng: np.random.Generator) -> RGB:
    """A print colour that stands out on ``base``."""
    candidates = [c for c in NAMED.values() if abs(luminance(c) - luminance(base)) > 70]
    if not candidates:
        return (255 - base[0], 255 - base[1], 255 - base[2])
    return candidates[int(rng.integers(len(candidates)))]


def tint(c: RGB, gain: tuple[float, float, float]) -> RGB:
    """Per-image dye variation of a colour (a label-independent nuisance gain per channel)."""
    return (min(255, max(0, round(c[0] * gain[0]))), min(255, max(0, round(c[1] * gain[1]))),
            min(255, max(0, round(c[2] * gain[2]))))
