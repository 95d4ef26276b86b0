"""A plain mannequin-like figure (head, neck, arms, legs) that garments are drawn onto."""

from __future__ import annotations

import math

from model_training.synthetic.geometry import Point
from model_training.synthetic.palette import RGB, shade
from model_training.synthetic.scene import Scene

ARM_LENGTH = 2.85


def arm_axis(side: int, angle_deg: float, joint: Point) -> tuple[Point, Point]:
    """Unit direction along the arm and its outward normal, for side +1 (right of image) or -1."""
    a = math.radians(angle_deg)
    d = (side * math.sin(a), math.cos(a))
    n = (side * math.cos(a), -math.sin(a))
    return d, n


def head(scene: Scene) -> None:
    skin, hair = scene.nuisance.skin, scene.nuisance.hair
    scene.polygon([(-0.17, -0.45), (0.17, -0.45), (0.2, 0.1), (-0.2, 0.1)], skin)  # neck
    scene.circle(0.0, -0.82, 0.4, fill=hair)
    scene.circle(0.0, -0.74, 0.34, fill=skin)
    scene.polygon([(-0.36, -0.85), (0.0, -1.2), (0.36, -0.85), (0.3, -1.05), (-0.3, -1.05)], hair)


def arm(scene: Scene, side: int, joint: Point, angle_deg: float) -> None:
    skin = scene.nuisance.skin
    d, n = arm_axis(side, angle_deg, joint)
    jx, jy = joint
    ex, ey = jx + d[0] * ARM_LENGTH, jy + d[1] * ARM_LENGTH
    scene.polygon([(jx + n[0] * 0.22, jy + n[1] * 0.22), (ex + n[0] * 0.13, ey + n[1] * 0.13),
                   (ex - n[0] * 0.13, ey - n[1] * 0.13), (jx - n[0] * 0.22, jy - n[1] * 0.22)], skin)
    scene.circle(ex + d[0] * 0.12, ey + d[1] * 0.12, 0.17, fill=shade(skin, 0.95))


def legs(scene: Scene, top: float, bottom: float, colour: RGB, spread: float = 0.5) -> None:
    for side in (-1, 1):
        scene.polygon([(side * 0.05, top), (side * 0.9, top), (side * (spread + 0.3), bottom),
                       (side * (spread - 0.05), bottom)], colour)
