"""What one garment drawing needs: the canvas, the body-to-pixel frame, the random streams and the
label-independent nuisance chosen for this image."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from model_training.synthetic.difficulty import Difficulty
from model_training.synthetic.fabric import FabricSpec, clip_box, paint_fabric
from model_training.synthetic.geometry import Frame, Point
from model_training.synthetic.palette import GOLD, RGB, SILVER


@dataclass(frozen=True)
class Nuisance:
    """Everything about an image that does not depend on its labels (drawn from its own stream)."""

    figure: bool  # on a simple figure, or laid flat (T-shirts only)
    skin: RGB
    hair: RGB
    legwear: RGB
    neck_variant: int  # neckline for categories whose neck is not labelled
    trim_variant: int  # collar/cuff colouring
    colour_gain: tuple[float, float, float]
    light_tilt: float = 0.0  # side-to-side light falloff on the garment (-1..1 times the level's light)


@dataclass
class Scene:
    canvas: Image.Image
    draw: ImageDraw.ImageDraw
    frame: Frame
    rng: np.random.Generator  # content stream: motif placement, colour picks
    nuisance: Nuisance
    difficulty: Difficulty

    @property
    def size(self) -> tuple[int, int]:
        return self.canvas.size

    def polygon(self, points: Iterable[Point], fill: RGB, outline: RGB | None = None, width: int = 0) -> None:
        self.draw.polygon(self.frame.pts(points), fill=fill, outline=outline, width=width)

    def line(self, points: Iterable[Point], fill: RGB, width: float) -> None:
        self.draw.line(self.frame.pts(points), fill=fill, width=max(1, round(self.frame.px(width))), joint="curve")

    def circle(self, x: float, y: float, r: float, fill: RGB | None = None, outline: RGB | None = None,
               width: float = 0.0) -> None:
        w = max(1, round(self.frame.px(width))) if outline is not None else 0
        self.draw.ellipse(self.frame.box(x, y, r), fill=fill, outline=outline, width=w)

    def mask(self, polygons: Iterable[Iterable[Point]], ellipses: Iterable[tuple[float, float, float, float]] = (),
             value: int = 255) -> Image.Image:
        """An 'L' mask of unit-space polygons and (x, y, rx, ry) ellipses."""
        m = Image.new("L", self.size, 0)
        d = ImageDraw.Draw(m)
        for poly in polygons:
            d.polygon(self.frame.pts(poly), fill=value)
        for x, y, rx, ry in ellipses:
            px, py = self.frame.pt(x, y)
            d.ellipse((px - self.frame.px(rx), py - self.frame.px(ry), px + self.frame.px(rx), py + self.frame.px(ry)),
                      fill=value)
        return m

    def paste_fabric(self, mask: Image.Image, spec: FabricSpec, chest: Point | None = None, chest_r: float = 0.55,
                     sheen: float = 0.0, alpha: float = 1.0) -> Image.Image:
        """Paint ``spec`` through ``mask`` with soft folds (and a satin sheen for party wear).

        Returns the fabric image so callers can reuse it (a blouse cut from the saree's own fabric).
        """
        box = clip_box(mask.getbbox() or (0, 0, 1, 1), self.size)
        chest_px = None
        if chest is not None:
            cx, cy = self.frame.pt(*chest)
            chest_px = (cx, cy, self.frame.px(chest_r))
        fabric = paint_fabric(self.size, box, spec, self.rng, chest_px)
        shade_fabric(fabric, sheen, self.nuisance.light_tilt)
        self.paste(fabric, box, mask, alpha)
        return fabric

    def paste(self, fabric: Image.Image, box: tuple[int, int, int, int], mask: Image.Image, alpha: float = 1.0) -> None:
        """Paste a box-sized fabric (painted over ``box``) through the full-size ``mask``."""
        part = mask.crop(box)
        if alpha < 1.0:
            part = part.point(lambda v: int(v * alpha))
        self.canvas.paste(fabric, box[:2], part)

    def sequins(self, mask: Image.Image, count: int, colour: RGB | None = None, radius: float = 0.035) -> None:
        """Small bright dots inside ``mask`` (embellishment density is the occasion cue)."""
        if count <= 0:
            return
        box = mask.getbbox()
        if box is None:
            return
        m = np.asarray(mask)
        xs = self.rng.uniform(box[0], box[2] - 1, count * 2).astype(int)
        ys = self.rng.uniform(box[1], box[3] - 1, count * 2).astype(int)
        keep = m[ys, xs] > 0
        r = max(1.0, self.frame.px(radius))
        for x, y in list(zip(xs[keep], ys[keep], strict=True))[:count]:
            c = colour or (GOLD if self.rng.random() < 0.5 else SILVER)
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=c)
            self.draw.point((int(x), int(y)), fill=(255, 255, 255))


FOLD_X = np.linspace(-1, 1, 64)
FOLDS = 1 - 0.14 * FOLD_X**2 + 0.035 * np.sin(9 * FOLD_X + 1.3)
_YY, _XX = np.mgrid[0:8, 0:8] / 7.0
GLOW = np.repeat(np.exp(-(((_XX - _YY) * 2.2) ** 2))[:, :, None], 3, axis=2) * 150


def shade_fabric(fabric: Image.Image, sheen: float, tilt: float = 0.0) -> None:
    """Soft cloth folds (darker towards the sides, a few ripples), the light's side-to-side falloff and an
    optional glossy highlight."""
    bw, bh = fabric.size
    if bw < 2 or bh < 2:
        return
    profile = np.clip(FOLDS * (1 - abs(tilt) / 2 + tilt / 2 * FOLD_X), 0, 1) * 255
    row = np.repeat(profile.astype(np.uint8)[None, :, None], 3, axis=2)
    fold = Image.fromarray(row, "RGB").resize((bw, bh), Image.Resampling.BILINEAR)
    patch = ImageChops.multiply(fabric, fold)
    if sheen > 0:
        light = Image.fromarray((GLOW * sheen).astype(np.uint8), "RGB").resize((bw, bh), Image.Resampling.BILINEAR)
        patch = ImageChops.screen(patch, light)
    fabric.paste(patch)
