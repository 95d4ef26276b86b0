"""Sarees: a draped saree on a simple figure (blouse, pleated skirt, pallu over the shoulder).

Which attribute drives which cue:
- color: the saree's dye; pattern: how motifs are made (gold zari buttis, thread-woven, printed in
  several inks, a single contrasting ink, or tone-on-tone for solid); print_or_pattern_type: the motif
- border: the band's style (gold zari, woven diamonds, temple spires, two-line default, plain, none);
  border_width: the band's width along the hem, pleats and pallu edges
- blouse_pattern: the blouse fabric (the saree's, the border's, a dotted contrast, a plain contrast)
- pallu_details: the hanging pallu end (woven lattice, gold zari stripes, plain same fabric, contrast block)
- ornamentation: a tonal jacquard lattice over the fabric, or tassels (latkans) on the pallu end
- occasion: embellishment density and sheen (daily: none ... wedding: dense gold and gloss)
- transparency: a see-through drape, showing the legs and blouse beneath
"""

from __future__ import annotations

from collections.abc import Mapping

from PIL import Image

from model_training.synthetic import figure
from model_training.synthetic.fabric import FabricSpec, clip_box, paint_fabric
from model_training.synthetic.geometry import Point, lerp, toward
from model_training.synthetic.palette import (
    GOLD,
    RGB,
    colour_of,
    contrast_ink,
    mix,
    multicolour,
    shade,
    tint,
)
from model_training.synthetic.scene import Scene, shade_fabric

PRINTS: dict[str, str | None] = {
    "default": "butti", "ethnic motif": "paisley", "peacock": "peacock", "floral": "floral", "solid": None,
    "elephant": "elephant", "applique": "applique", "checked": "checks", "botanical": "botanical",
}
BORDER_WIDTH = {"small border": 0.13, "big border": 0.4}
SHEEN = {"daily": 0.0, "traditional": 0.0, "party": 0.7, "wedding": 0.9}
SEQUINS = {"daily": 0, "traditional": 25, "party": 70, "wedding": 170}

BLOUSE: list[Point] = [(-0.45, -0.02), (0.45, -0.02), (0.95, 0.12), (0.82, 1.35), (-0.82, 1.35), (-0.95, 0.12)]
SKIRT: list[Point] = [(-0.85, 1.8), (0.85, 1.8), (1.25, 6.8), (-1.25, 6.8)]
DRAPE: list[Point] = [(-0.45, -0.03), (-1.02, 0.1), (-1.0, 0.72), (0.9, 2.55), (0.9, 1.5)]
HANG: list[Point] = [(-1.08, 0.08), (-0.9, 0.3), (-0.98, 3.85), (-1.68, 3.62)]


def _saree_fabric(labels: Mapping[str, str], scene: Scene, base: list[RGB], border: RGB) -> FabricSpec:
    rng = scene.rng
    motif = PRINTS[labels.get("print_or_pattern_type", "default")]
    pattern = labels.get("pattern", "zari woven")
    strength = 0.35 + 0.65 * scene.difficulty.cue
    weave = "jacquard" if labels.get("ornamentation") == "jacquard" else "none"
    if motif is None and pattern != "solid":
        motif = "dots"
    b = base[0]
    if pattern == "zari woven":
        return FabricSpec(base, motif, "scatter", [GOLD, shade(GOLD, 0.8)], strength, weave, 0.9)
    if pattern == "woven design":
        inks = [border, contrast_ink(b, rng)]
        return FabricSpec(base, motif, "allover", inks, strength, "weave" if weave == "none" else weave, 0.8)
    if pattern == "printed":
        return FabricSpec(base, motif, "allover", [contrast_ink(b, rng) for _ in range(3)], strength, weave, 1.0)
    if pattern == "default":
        return FabricSpec(base, motif, "scatter", [contrast_ink(b, rng)], strength, weave, 1.5)
    tone = shade(b, 0.78) if sum(b) > 150 else shade(b, 1.25)
    return FabricSpec(base, motif, "scatter", [tone], 1.0, weave, 1.2)  # solid: tone-on-tone


def _band(scene: Scene, p0: Point, p1: Point, inward: Point, width: float, style: str, colour: RGB,
          accent: RGB) -> None:
    """A border band along p0 -> p1, ``width`` units deep towards ``inward`` (a unit vector)."""
    q0 = (p0[0] + inward[0] * width, p0[1] + inward[1] * width)
    q1 = (p1[0] + inward[0] * width, p1[1] + inward[1] * width)
    fill = GOLD if style == "zari" else colour
    scene.polygon([p0, p1, q1, q0], fill)
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length = (dx * dx + dy * dy) ** 0.5
    if style == "zari":
        for t in (0.25, 0.75):
            a = (p0[0] + inward[0] * width * t, p0[1] + inward[1] * width * t)
            b = (p1[0] + inward[0] * width * t, p1[1] + inward[1] * width * t)
            scene.line([a, b], shade(GOLD, 0.7), max(0.012, width * 0.08))
    elif style == "default":
        for t in (0.2, 0.8):
            a = (p0[0] + inward[0] * width * t, p0[1] + inward[1] * width * t)
            b = (p1[0] + inward[0] * width * t, p1[1] + inward[1] * width * t)
            scene.line([a, b], accent, max(0.012, width * 0.07))
    elif style in ("woven design", "temple border"):
        step = max(width, 0.1) * (1.1 if style == "woven design" else 0.8)
        n = max(1, int(length / step))
        for i in range(n):
            t0, t1 = i / n, (i + 1) / n
            a = (lerp(p0[0], p1[0], t0), lerp(p0[1], p1[1], t0))
            b = (lerp(p0[0], p1[0], t1), lerp(p0[1], p1[1], t1))
            m = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
            if style == "temple border":  # spires pointing into the fabric
                tip = (m[0] + inward[0] * width * 0.9, m[1] + inward[1] * width * 0.9)
                scene.polygon([a, b, tip], accent)
            else:  # woven lozenges
                c = (m[0] + inward[0] * width * 0.5, m[1] + inward[1] * width * 0.5)
                hx, hy = (b[0] - a[0]) * 0.4, (b[1] - a[1]) * 0.4
                ix, iy = inward[0] * width * 0.4, inward[1] * width * 0.4
                scene.polygon([(c[0] - hx, c[1] - hy), (c[0] + ix, c[1] + iy), (c[0] + hx, c[1] + hy),
                               (c[0] - ix, c[1] - iy)], accent)


def _quad_part(quad: list[Point], t0: float, t1: float) -> list[Point]:
    """The part of a quad (top-left, top-right, bottom-right, bottom-left) between heights t0 and t1."""
    tl, tr, br, bl = quad

    def at(p: Point, q: Point, t: float) -> Point:
        return (lerp(p[0], q[0], t), lerp(p[1], q[1], t))

    return [at(tl, bl, t0), at(tr, br, t0), at(tr, br, t1), at(tl, bl, t1)]


def draw_saree(scene: Scene, labels: Mapping[str, str]) -> None:
    rng, cue, nz = scene.rng, scene.difficulty.cue, scene.nuisance
    colour = labels.get("color", "multicolor")
    base = [tint(c, nz.colour_gain) for c in (multicolour(rng) if colour == "multicolor" else [colour_of(colour, rng)])]
    border_colour = contrast_ink(base[0], rng)
    accent = GOLD if border_colour != GOLD else (250, 250, 240)
    spec = _saree_fabric(labels, scene, base, border_colour)
    whole = scene.frame.pts([(-1.8, -0.2), (1.4, -0.2), (1.4, 7.0), (-1.8, 7.0)])
    box = clip_box((min(p[0] for p in whole), min(p[1] for p in whole), max(p[0] for p in whole),
                    max(p[1] for p in whole)), scene.size)
    fabric = paint_fabric(scene.size, box, spec, rng)
    occasion = labels.get("occasion", "traditional")
    shade_fabric(fabric, SHEEN[occasion] * cue, nz.light_tilt)
    alpha = 1.0 - 0.45 * cue if labels.get("transparency") == "yes" else 1.0

    # the figure underneath: legs, torso, arms, head
    figure.legs(scene, 1.9, 6.85, nz.skin, spread=0.45)
    scene.polygon([(-0.8, 0.0), (0.8, 0.0), (0.78, 1.95), (-0.78, 1.95)], nz.skin)
    for side in (-1, 1):
        figure.arm(scene, side, (side * 0.9, 0.45), 10.0)
    figure.head(scene)

    _blouse(scene, labels.get("blouse_pattern", "same as saree"), fabric, box, border_colour)
    scene.polygon(arc_neck(), nz.skin)

    # skirt with pleats and borders
    width = labels.get("border_width", "small border")
    border = labels.get("border", "zari")
    band_w = 0.0
    if width != "no border" and border != "no border":
        band_w = toward(0.26, BORDER_WIDTH[width], cue)
    skirt_mask = scene.mask([SKIRT])
    scene.paste(fabric, box, skirt_mask, alpha)
    for k in range(5):
        x0, x1 = 0.05 + 0.09 * k, 0.12 + 0.16 * k
        scene.line([(x0, 2.0), (x1, 6.75)], shade(base[0], 0.7), 0.02)
    if band_w:
        _band(scene, (-1.25, 6.8), (1.25, 6.8), (0.0, -1.0), band_w, border, border_colour, accent)
        _band(scene, (0.5, 1.85), (0.83, 6.8), (-0.99, 0.07), band_w * 0.8, border, border_colour, accent)

    # the pallu: across the chest and hanging behind the left shoulder
    drape_mask = scene.mask([DRAPE, HANG])
    scene.paste(fabric, box, drape_mask, alpha)
    _pallu_end(scene, labels.get("pallu_details", "same as saree"), base[0], border_colour)
    if band_w:
        _band(scene, (-1.0, 0.72), (0.9, 2.55), (0.0, -1.0), band_w * 0.8, border, border_colour, accent)
        _band(scene, (-1.08, 0.08), (-1.68, 3.62), (0.99, 0.1), band_w * 0.8, border, border_colour, accent)
    if labels.get("ornamentation") == "tassels and latkans":
        _tassels(scene, HANG[3], HANG[2], cue, border_colour)
    scene.sequins(scene.mask([SKIRT, DRAPE, HANG]), int(SEQUINS[occasion] * (0.4 + 0.6 * cue)),
                  colour=None if occasion == "party" else GOLD)
    for s in (-1, 1):  # feet
        scene.circle(s * 0.4, 6.9, 0.14, fill=shade(nz.skin, 0.9))


def _blouse(scene: Scene, blouse: str, fabric: Image.Image, box: tuple[int, int, int, int], border_colour: RGB) -> None:
    """The blouse with short sleeves: the saree's fabric, the border's colour (gold-trimmed) or a contrast."""
    sleeves = [[(s * 0.95, 0.12), (s * 1.2, 0.9), (s * 0.86, 0.98), (s * 0.78, 0.6)] for s in (-1, 1)]
    blouse_mask = scene.mask([BLOUSE, *sleeves])
    if blouse == "same as saree":
        scene.paste(fabric, box, blouse_mask)
        return
    plain = border_colour if blouse == "same as border" else contrast_ink(border_colour, scene.rng)
    blouse_spec = FabricSpec([plain], "dots" if blouse == "default" else None,
                             "allover" if blouse == "default" else "none", [shade(plain, 0.6)], 1.0, "none", 0.35)
    scene.paste_fabric(blouse_mask, blouse_spec)
    if blouse == "same as border":
        for s in (-1, 1):
            scene.line([(s * 1.2, 0.9), (s * 0.86, 0.98)], GOLD, 0.07)
        scene.line([(-0.82, 1.33), (0.82, 1.33)], GOLD, 0.07)


def arc_neck() -> list[Point]:
    return [(-0.42, -0.03), (-0.3, 0.28), (0.0, 0.38), (0.3, 0.28), (0.42, -0.03)]


def _pallu_end(scene: Scene, details: str, base: RGB, border: RGB) -> None:
    part = _quad_part(HANG, 0.5, 1.0)
    if details == "same as saree":
        return
    if details == "default":
        scene.polygon(part, mix(border, base, 0.25))
        return
    if details == "zari woven":
        for i in range(6):
            scene.polygon(_quad_part(HANG, 0.52 + i * 0.08, 0.56 + i * 0.08), GOLD)
        return
    # woven design: a lattice of lozenges in the border colour
    scene.polygon(part, shade(base, 0.85))
    for i in range(5):
        for j in range(3):
            q = _quad_part(HANG, 0.55 + i * 0.09, 0.6 + i * 0.09)
            x = lerp(q[0][0], q[1][0], (j + 0.5) / 3)
            y = lerp(q[0][1], q[3][1], 0.5) + (j - 1) * 0.05
            scene.polygon([(x, y - 0.08), (x + 0.06, y), (x, y + 0.08), (x - 0.06, y)], border)


def _tassels(scene: Scene, p0: Point, p1: Point, cue: float, colour: RGB) -> None:
    length = toward(0.18, 0.4, cue)
    for i in range(7):
        t = (i + 0.5) / 7
        x, y = lerp(p0[0], p1[0], t), lerp(p0[1], p1[1], t)
        scene.line([(x, y), (x, y + length)], colour, 0.025)
        scene.circle(x, y + length, 0.06, fill=GOLD if i % 2 else colour)
