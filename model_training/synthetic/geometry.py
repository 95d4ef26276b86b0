"""Garments are drawn in body units (shoulder half-width = 1, y down from the neck base) and mapped to
pixels by a :class:`Frame`: scale, position and a small rotation applied to the points themselves, which is
much cheaper than rotating the finished image."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

Point = tuple[float, float]


@dataclass(frozen=True)
class Frame:
    scale: float  # pixels per body unit
    cx: float  # pixel position of the body origin (neck base)
    cy: float
    angle: float = 0.0  # radians

    def pt(self, x: float, y: float) -> Point:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return (self.cx + self.scale * (x * c - y * s), self.cy + self.scale * (x * s + y * c))

    def pts(self, points: Iterable[Point]) -> list[Point]:
        return [self.pt(x, y) for x, y in points]

    def px(self, length: float) -> float:
        return length * self.scale

    def box(self, x: float, y: float, r: float) -> tuple[float, float, float, float]:
        """Pixel bounding box of a circle of radius ``r`` units centred at ``(x, y)``."""
        px, py = self.pt(x, y)
        rr = r * self.scale
        return (px - rr, py - rr, px + rr, py + rr)


def mirror(points: Iterable[Point]) -> list[Point]:
    return [(-x, y) for x, y in points]


def arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, n: int = 12) -> list[Point]:
    """Points on an ellipse from angle ``start`` to ``stop`` (degrees, 0 = +x, 90 = down)."""
    out = []
    for i in range(n + 1):
        a = math.radians(start + (stop - start) * i / n)
        out.append((cx + rx * math.cos(a), cy + ry * math.sin(a)))
    return out


def lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def toward(neutral: float, value: float, strength: float) -> float:
    """``value`` pulled towards ``neutral``: cue strength 1 keeps it, 0 erases the difference."""
    return neutral + (value - neutral) * strength
