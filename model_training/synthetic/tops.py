"""T-shirts, tops/tunics and kurtis: one parametric upper-body garment.

Which attribute drives which cue (the documented contract for the synthetic catalog):
- color: the fabric dye (``multicolor``: colour blocks; ``default``: an unnamed hue)
- pattern: how much of the garment carries the print (none/small chest logo, scattered, full)
- print_or_pattern_type: the motif (text, geometry, faces, squiggles, florals, stripes, paisley, ...)
- sleeve_length: sleeve geometry along the arm; sleeve_styling: puff head, bell end, cuff band, no sleeve
- neck / neck_collar: the neckline cut-out and collars; length: the hem; fit_shape: the silhouette width
- surface_styling: knit texture, ruffles, tie-up bows, waist tie belt, applique patches
- occasion / ocassion: satin sheen and sequins for party wear; ornamentation ``net``: a mesh yoke
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw

from model_training.synthetic import figure
from model_training.synthetic.fabric import FabricSpec
from model_training.synthetic.geometry import Point, arc, mirror, toward
from model_training.synthetic.motifs import applique
from model_training.synthetic.palette import (
    GOLD,
    RGB,
    colour_of,
    contrast_ink,
    mix,
    multicolour,
    shade,
    tint,
    tone,
)
from model_training.synthetic.scene import Scene

SLEEVE_LENGTH = {"short sleeves": 0.85, "default": 1.45, "three-quarter sleeves": 2.0, "long sleeves": 2.8}
SLEEVE_NEUTRAL = 1.7
HEM = {"crop": 1.5, "regular": 2.75, "long": 3.55, "knee length": 4.4, "calf length": 5.7}
# fit -> (chest, waist, hem) half-width factors
FIT = {
    "regular": (1.0, 0.97, 1.0), "fitted": (0.9, 0.76, 0.88), "boxy": (1.16, 1.16, 1.16),
    "loose": (1.2, 1.3, 1.45), "default": (0.94, 0.8, 1.4), "a-line": (0.95, 1.0, 1.6),
    "straight": (1.0, 1.0, 1.04),
}
# pattern -> how much of the garment is printed
COVERAGE = {"solid": "small", "printed": "full", "default": "scatter"}
# print type -> (motif, arrangement when fully printed), per category
PRINTS: dict[str, dict[str, tuple[str | None, str]]] = {
    # "default" on men's T-shirts is any other print: one of several motifs
    "Men Tshirts": {"solid": (None, "none"), "default": ("graphic|funky|floral|dots", "allover"),
                    "typography": ("typography", "placement")},
    "Women Tshirts": {"solid": (None, "none"), "typography": ("typography", "placement"),
                      "funky print": ("funky", "allover"), "default": ("dots", "allover"),
                      "quirky": ("quirky", "placement"), "graphic": ("graphic", "placement")},
    "Women Tops & Tunics": {"solid": (None, "none"), "default": ("stripes", "allover"),
                            "typography": ("typography", "placement"), "quirky": ("quirky", "placement"),
                            "graphic": ("graphic", "placement"), "floral": ("floral", "allover")},
    "Kurtis": {"solid": (None, "none"), "default": ("paisley", "allover")},
}
KURTI_COVERAGE = {"default": "full", "solid": "small"}


@dataclass(frozen=True)
class Shape:
    sleeve: float  # sleeve length in units along the arm (0 = sleeveless)
    sleeve_style: str  # regular | puff | bell | cuffed
    hem: float
    chest: float
    waist: float
    hem_width: float
    shoulder_drop: bool


def _shape(category: str, labels: Mapping[str, str], cue: float) -> Shape:
    length = labels.get("sleeve_length", "short sleeves")
    styling = labels.get("sleeve_styling", "regular")
    sleeveless = "sleeveless" in (length, styling)
    sleeve = 0.0 if sleeveless else toward(SLEEVE_NEUTRAL, SLEEVE_LENGTH.get(length, 0.85), cue)
    style = {"puff sleeves": "puff", "default": "bell", "cuffed sleeves": "cuffed"}.get(styling, "regular")
    if category == "Kurtis":
        hem = toward(5.05, HEM[labels.get("length", "knee length")], cue)
    elif category == "Men Tshirts":
        hem = 2.95
    else:
        hem = toward(2.6, HEM[labels.get("length", "regular")], cue)
    fit = labels.get("fit_shape", "straight" if category == "Kurtis" else "regular")
    c, w, h = (toward(1.0, f, cue) for f in FIT[fit])
    return Shape(sleeve, style, hem, c, w, h, fit in ("loose", "boxy"))


def _body(shape: Shape) -> list[Point]:
    """Right half of the torso outline, top (neck edge) to hem centre."""
    sx, sy = (1.12, 0.28) if shape.shoulder_drop else (1.0, 0.15)
    if shape.sleeve == 0:
        half = [(0.4, -0.02), (0.74, 0.08), (0.7, 0.45), (0.88 * shape.chest, 0.88)]
    else:
        half = [(0.4, -0.02), (sx * shape.chest, sy), (0.92 * shape.chest, 0.88)]
    if shape.hem > 2.05:
        half.append((0.9 * shape.waist, 1.9))
    hem_half = 0.95 * shape.hem_width + max(0.0, shape.hem_width - 1.0) * 0.3 * max(0.0, shape.hem - 2.75)
    half += [(hem_half, shape.hem), (0.0, shape.hem + 0.06)]
    return half


def _sleeve(shape: Shape, side: int, angle: float) -> tuple[list[Point], Point, Point, Point, float]:
    """Sleeve polygon plus its joint, end centre, axis and end half-width."""
    sx, sy = (1.12, 0.28) if shape.shoulder_drop else (1.0, 0.15)
    top = (side * sx * shape.chest, sy)
    pit = (side * 0.92 * shape.chest, 0.88)
    joint = ((top[0] + pit[0]) / 2, (top[1] + pit[1]) / 2)
    d, n = figure.arm_axis(side, angle, joint)
    end = (joint[0] + d[0] * shape.sleeve, joint[1] + d[1] * shape.sleeve)
    w = 0.4 - 0.07 * shape.sleeve / 2.8
    if shape.sleeve_style == "bell":
        w = 0.55
    poly = [top, (end[0] + n[0] * w, end[1] + n[1] * w), (end[0] - n[0] * w, end[1] - n[1] * w), pit]
    return poly, joint, end, d, w


def _neck_opening(kind: str) -> list[Point]:
    if kind == "v-neck":
        return [(-0.36, -0.02), (0.0, 0.75), (0.36, -0.02)]
    if kind == "square neck":
        return [(-0.42, -0.02), (-0.42, 0.5), (0.42, 0.5), (0.42, -0.02)]
    if kind == "sweetheart neck":
        right = [(0.46, -0.02), (0.46, 0.28), (0.38, 0.46), (0.22, 0.52), (0.08, 0.46), (0.0, 0.6)]
        return mirror(right[::-1][1:])[::-1] + right[::-1]
    if kind == "default":  # boat neck: wide and shallow
        return arc(0.0, -0.02, 0.62, 0.16, 180, 0)
    if kind == "high":
        return arc(0.0, -0.02, 0.26, 0.08, 180, 0)
    if kind == "polo":
        return arc(0.0, -0.02, 0.3, 0.2, 180, 0)
    if kind == "stylised":  # keyhole
        return [*arc(0.0, -0.02, 0.32, 0.18, 180, 90, 6), *arc(0.0, 0.42, 0.12, 0.26, 270, 450, 10),
                *arc(0.0, -0.02, 0.32, 0.18, 90, 0, 6)]
    return arc(0.0, -0.02, 0.38, 0.3, 180, 0)  # round


def _neck_kind(category: str, labels: Mapping[str, str], variant: int) -> str:
    if "neck" in labels:
        return labels["neck"]
    if "neck_collar" in labels:
        return labels["neck_collar"]
    if category == "Kurtis":
        return ("round", "v-neck", "high", "round")[variant % 4]
    return ("round", "round", "v-neck", "round")[variant % 4]  # women's T-shirts: not labelled


def fabric_for(category: str, labels: Mapping[str, str], scene: Scene) -> FabricSpec:
    rng = scene.rng
    colour = labels.get("color", "default")
    colours = multicolour(rng) if colour == "multicolor" else [colour_of(colour, rng)]
    colours = [tint(c, scene.nuisance.colour_gain) for c in colours]
    motif, arrangement = PRINTS[category][labels.get("print_or_pattern_type", "solid")]
    if motif is not None and "|" in motif:
        options = motif.split("|")
        motif = options[int(rng.integers(len(options)))]
    pattern = labels.get("pattern", "solid")
    coverage = (KURTI_COVERAGE if category == "Kurtis" else COVERAGE).get(pattern, "small")
    size = 1.0
    if motif is None and coverage in ("full", "scatter"):
        # printed, yet the print type says solid (rare): a stripe no print type of the category uses
        used = {m for ms, _ in PRINTS[category].values() if ms for m in ms.split("|")}
        motif, arrangement = ("checks" if "stripes" in used else "stripes"), "allover"
    if coverage == "small":
        arrangement = "small" if motif is not None else "none"
        size = 0.5 if motif in ("stripes", "checks") else 1.0
    elif coverage == "scatter":
        arrangement = "scatter" if arrangement == "allover" else "small"
        size = 1.7 if motif in ("stripes", "checks") else 1.3
    base = colours[0]
    inks = [contrast_ink(base, rng) for _ in range(3)]
    weave = "knit" if labels.get("surface_styling") == "knitted" else "none"
    strength = 0.35 + 0.65 * scene.difficulty.cue
    return FabricSpec(colours, motif, arrangement, inks, strength, weave, size)


def draw_top(scene: Scene, category: str, labels: Mapping[str, str]) -> None:
    cue = scene.difficulty.cue
    shape = _shape(category, labels, cue)
    on_figure = scene.nuisance.figure
    angle = 14.0 if on_figure else (22.0 if shape.sleeve > 1.6 else 48.0)
    spec = fabric_for(category, labels, scene)
    base = spec.colours[0]
    trim = tone(base, 0.3) if scene.nuisance.trim_variant % 3 else contrast_ink(base, scene.rng)

    if on_figure:
        figure.legs(scene, 2.2, 7.0, scene.nuisance.legwear)
        figure.head(scene)
        for side in (-1, 1):
            sx = 1.12 if shape.shoulder_drop else 1.0
            figure.arm(scene, side, (side * 0.8 * sx * shape.chest, 0.42), angle)

    body = _body(shape)
    outline = body[:-1] + mirror(body[::-1][1:])
    polygons = [outline]
    ellipses = []
    sleeves = []
    if shape.sleeve > 0:
        for side in (-1, 1):
            sleeves.append(_sleeve(shape, side, angle))
            polygons.append(sleeves[-1][0])
            if shape.sleeve_style == "puff":
                j, d = sleeves[-1][1], sleeves[-1][3]
                r = toward(0.4, 0.56, cue)
                ellipses.append((j[0] + d[0] * 0.25, j[1] + d[1] * 0.25 - 0.05, r, r * 0.85))
    mask = scene.mask(polygons, ellipses)
    party = labels.get("occasion", labels.get("ocassion")) == "party"
    scene.paste_fabric(mask, spec, chest=(0.0, 1.05), sheen=0.8 * cue if party else 0.0)

    _sleeve_details(scene, shape, sleeves, base, trim)
    _neck(scene, _neck_kind(category, labels, scene.nuisance.neck_variant), base, trim, on_figure)
    _surface(scene, labels.get("surface_styling", "default"), shape, base, cue)
    if labels.get("ornamentation") == "net":
        _net_yoke(scene, shape, sleeves, base)
    if party:
        scene.sequins(mask, int(60 * cue + 15))


def _sleeve_details(scene: Scene, shape: Shape, sleeves: list[tuple[list[Point], Point, Point, Point, float]],
                    base: RGB, trim: RGB) -> None:
    for _poly, joint, end, d, w in sleeves:
        n = (d[1], -d[0])
        if shape.sleeve_style == "cuffed":
            c0 = (end[0] - d[0] * 0.3, end[1] - d[1] * 0.3)
            cw = w + 0.04
            scene.polygon([(c0[0] + n[0] * cw, c0[1] + n[1] * cw), (end[0] + n[0] * cw, end[1] + n[1] * cw),
                           (end[0] - n[0] * cw, end[1] - n[1] * cw), (c0[0] - n[0] * cw, c0[1] - n[1] * cw)],
                          trim, outline=shade(trim, 0.7), width=1)
        else:  # a plain hem stitch line
            scene.line([(end[0] + n[0] * w * 0.95, end[1] + n[1] * w * 0.95),
                        (end[0] - n[0] * w * 0.95, end[1] - n[1] * w * 0.95)], shade(base, 0.8), 0.03)
        if shape.sleeve_style == "puff":
            for k in (-1, 0, 1):
                p0 = (joint[0] + n[0] * 0.18 * k, joint[1] + n[1] * 0.18 * k)
                scene.line([p0, (p0[0] + d[0] * 0.45, p0[1] + d[1] * 0.45)], shade(base, 0.75), 0.025)


def _neck(scene: Scene, kind: str, base: RGB, trim: RGB, on_figure: bool) -> None:
    inside = scene.nuisance.skin if on_figure else shade(base, 0.55)
    opening = _neck_opening(kind)
    scene.polygon(opening, inside)
    band = tone(base, 0.2)
    if kind == "high":
        scene.polygon([(-0.26, -0.42), (0.26, -0.42), (0.3, 0.04), (-0.3, 0.04)], shade(base, 0.95),
                      outline=band, width=2)
        for k in range(-2, 3):
            scene.line([(k * 0.1, -0.4), (k * 0.1, 0.02)], band, 0.02)
        return
    scene.line(opening, band, 0.06)
    if kind == "polo":
        for side in (-1, 1):
            scene.polygon(mirror([(0.02, 0.2), (0.36, -0.06), (0.55, 0.22), (0.2, 0.42)]) if side < 0 else
                          [(0.02, 0.2), (0.36, -0.06), (0.55, 0.22), (0.2, 0.42)], trim, outline=shade(trim, 0.7),
                          width=1)
        scene.polygon([(-0.08, 0.2), (0.08, 0.2), (0.08, 0.85), (-0.08, 0.85)], shade(base, 0.9),
                      outline=shade(base, 0.7), width=1)
        for y in (0.4, 0.65):
            scene.circle(0.0, y, 0.04, fill=(235, 235, 230))
    elif kind == "stylised":
        scene.circle(0.0, -0.0, 0.05, fill=GOLD)


def _surface(scene: Scene, styling: str, shape: Shape, base: RGB, cue: float) -> None:
    dark = tone(base, 0.4)
    if styling == "ruffles":
        r = toward(0.08, 0.15, cue)
        hem = shape.hem
        half = 0.95 * shape.hem_width + 0.05
        x = -half
        while x <= half:
            scene.circle(x, hem, r, fill=shade(base, 1.12), outline=dark, width=0.02)
            x += r * 1.6
        for x in (-0.45, -0.25, 0.25, 0.45):
            scene.circle(x, 0.55, r * 0.8, fill=shade(base, 1.12), outline=dark, width=0.02)
    elif styling == "tie-ups":
        _bow(scene, 0.0, 0.5, toward(0.1, 0.2, cue), dark)
    elif styling == "waist tie-ups":
        y = min(1.75, shape.hem - 0.3)
        w = 0.92 * shape.waist + 0.02
        scene.polygon([(-w, y - 0.1), (w, y - 0.1), (w, y + 0.1), (-w, y + 0.1)], dark)
        _bow(scene, 0.35, y, toward(0.1, 0.2, cue), dark)
    elif styling == "applique":
        for x, y in ((-0.45, 1.3), (0.4, 1.75)):
            px, py = scene.frame.pt(x, y)
            applique(scene.draw, px, py, scene.frame.px(toward(0.12, 0.22, cue)),
                     [contrast_ink(base, scene.rng), mix(base, (255, 255, 255), 0.6)], scene.rng)


def _bow(scene: Scene, x: float, y: float, r: float, colour: RGB) -> None:
    scene.polygon([(x, y), (x - 2 * r, y - r), (x - 2 * r, y + r)], colour)
    scene.polygon([(x, y), (x + 2 * r, y - r), (x + 2 * r, y + r)], colour)
    scene.circle(x, y, r * 0.45, fill=shade(colour, 0.8))
    scene.line([(x, y), (x - 0.6 * r, y + 4 * r)], colour, r * 0.35)
    scene.line([(x, y), (x + 0.7 * r, y + 4 * r)], colour, r * 0.35)


def _net_yoke(scene: Scene, shape: Shape, sleeves: list[tuple[list[Point], Point, Point, Point, float]],
              base: RGB) -> None:
    """A sheer mesh panel over the yoke and sleeves: fine cross-hatching clipped to that region."""
    yoke = [(-0.98 * shape.chest, 0.12), (-0.4, -0.02), (0.4, -0.02), (0.98 * shape.chest, 0.12),
            (0.92 * shape.chest, 0.75), (-0.92 * shape.chest, 0.75)]
    region = scene.mask([yoke] + [s[0] for s in sleeves])
    box = region.getbbox()
    if box is None:
        return
    mesh = Image.new("L", scene.size, 0)
    d = ImageDraw.Draw(mesh)
    step = max(4, int(scene.frame.px(0.09)))
    h = box[3] - box[1]
    for x in range(box[0] - h, box[2], step):
        d.line((x, box[1], x + h, box[3]), fill=255, width=1)
        d.line((x + h, box[1], x, box[3]), fill=255, width=1)
    colour = shade(base, 0.55) if sum(base) > 200 else mix(base, (255, 255, 255), 0.6)
    scene.canvas.paste(colour, (0, 0), ImageChops.multiply(mesh, region))
    scene.polygon([(-0.92 * shape.chest, 0.73), (0.92 * shape.chest, 0.73), (0.92 * shape.chest, 0.79),
                   (-0.92 * shape.chest, 0.79)], colour)
