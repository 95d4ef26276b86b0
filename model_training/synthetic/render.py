"""``render_image``: one product photo for a category and its labels.

Two independent random streams come from the seed: a nuisance stream (image height, backdrop, figure,
position, scale, rotation, lighting, noise, JPEG quality) drawn in a fixed order before anything looks at
the labels, and a content stream (motif placement, which unnamed or multicolour dyes). So changing a label
never moves the garment or relights the scene: only that label's cue changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from io import BytesIO

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from catalog.taxonomy import load_taxonomy
from model_training.synthetic.difficulty import Difficulty, get_difficulty
from model_training.synthetic.geometry import Frame
from model_training.synthetic.palette import BACKDROPS, SKIN_TONES, TROUSERS, shade
from model_training.synthetic.sampling import fill_missing
from model_training.synthetic.saree import draw_saree
from model_training.synthetic.scene import Nuisance, Scene
from model_training.synthetic.tops import draw_top

WIDTH = 512
MIN_HEIGHT, MAX_HEIGHT = 380, 768
# visible body-unit window per category: (top, bottom, half width); flat-lay T-shirts use FLAT_VIEW
VIEWS = {
    "Men Tshirts": (-1.3, 4.0, 2.3), "Women Tshirts": (-1.3, 4.0, 2.3), "Women Tops & Tunics": (-1.3, 4.0, 2.3),
    "Kurtis": (-1.3, 6.3, 2.1), "Sarees": (-1.3, 7.1, 1.9),
}
FLAT_VIEW = (-0.5, 3.8, 2.5)
FLAT_CATEGORIES = ("Men Tshirts", "Women Tshirts")
NOISE_TILE = 1024


@cache
def _noise_tile(amplitude: int) -> Image.Image:
    """A fixed sensor-noise texture (centred on 128); images crop it at a seeded offset."""
    rng = np.random.default_rng(12345 + amplitude)
    noise = np.clip(128 + rng.normal(0, amplitude, (NOISE_TILE, NOISE_TILE)), 0, 255).astype(np.uint8)
    return Image.fromarray(noise, "L").convert("RGB")


def _frame(view: tuple[float, float, float], height: int, scale_f: float, shift: np.ndarray, angle: float) -> Frame:
    """Where the garment sits: its view (top, bottom, half width) scaled into the canvas and shifted."""
    top, bottom, half = view
    scale = min(0.94 * height / (bottom - top), 0.94 * WIDTH / (2 * half)) * min(1.0, scale_f)
    scale *= max(scale_f, 1.0) ** 0.5  # zooming in may crop a little, like a tight product shot
    free_x = max(0.0, WIDTH - 2 * half * scale) / 2
    free_y = max(0.0, height - (bottom - top) * scale) / 2
    cx = WIDTH / 2 + shift[0] * free_x
    cy = height / 2 + shift[1] * free_y - scale * (top + bottom) / 2
    return Frame(scale, cx, cy, angle)


def render_image(category: str, labels: Mapping[str, str | None], seed: int, difficulty: str = "medium") -> Image.Image:
    """Render one product image (RGB, 512 px wide, 380-768 px tall) showing every label.

    ``labels`` maps attribute names to values; attributes left out (or ``None``) are drawn from the
    real table's distribution using ``seed``. ``image.info["jpeg_quality"]`` is the quality the image
    should be saved at (part of the nuisance).
    """
    cat = load_taxonomy().category(category)
    for name, value in labels.items():
        if value is not None:
            cat.attribute(name).validate(value)
    full: dict[str, str] = {k: v for k, v in labels.items() if v is not None}
    if len(full) < len(cat.attributes):  # only then load the real table's distributions
        full = fill_missing(cat.name, labels, np.random.default_rng([seed, 3]))
    level = get_difficulty(difficulty)
    nrng = np.random.default_rng([seed, 1])
    crng = np.random.default_rng([seed, 2])

    # --- nuisance, in a fixed order, independent of the labels ---
    height = int(nrng.integers(MIN_HEIGHT, MAX_HEIGHT + 1))
    backdrop = BACKDROPS[int(nrng.integers(len(BACKDROPS)))]
    flat = cat.name in FLAT_CATEGORIES and nrng.random() < 0.5
    nuisance = Nuisance(
        figure=not flat,
        skin=SKIN_TONES[int(nrng.integers(len(SKIN_TONES)))],
        hair=shade((60, 40, 30), float(nrng.uniform(0.3, 1.2))),
        legwear=TROUSERS[int(nrng.integers(len(TROUSERS)))],
        neck_variant=int(nrng.integers(100)),
        trim_variant=int(nrng.integers(100)),
        colour_gain=tuple(float(g) for g in 1 + nrng.normal(0, level.colour_jitter, 3)),  # type: ignore[arg-type]
        light_tilt=float(nrng.uniform(-1, 1) * level.light),
    )
    scale_f = 1 + nrng.uniform(-1, 1) * level.scale_jitter
    shift = nrng.uniform(-1, 1, 2) * level.shift
    angle = float(np.radians(nrng.uniform(-1, 1) * level.rotation_deg))
    light = nrng.uniform(1 - level.light, 1.0, 4)
    cast = 1 + nrng.normal(0, level.colour_jitter / 2, 3)
    quality = int(nrng.integers(level.jpeg_quality[0], level.jpeg_quality[1] + 1))
    noise_at = nrng.integers(0, NOISE_TILE - MAX_HEIGHT, 2)
    props = nrng.uniform(0, 1, (3, 6))

    frame = _frame(FLAT_VIEW if flat else VIEWS[cat.name], height, scale_f, shift, angle)
    canvas = _backdrop(WIDTH, height, backdrop, light)
    draw = ImageDraw.Draw(canvas)
    _props(draw, WIDTH, height, backdrop, props[: level.clutter])
    scene = Scene(canvas, draw, frame, crng, nuisance, level)
    if cat.name == "Sarees":
        draw_saree(scene, full)
    else:
        draw_top(scene, cat.name, full)
    image = _finish(canvas, cast, level, noise_at)
    image.info["jpeg_quality"] = quality
    return image


def _backdrop(width: int, height: int, colour: tuple[int, int, int], light: np.ndarray) -> Image.Image:
    """The studio backdrop under an uneven light: a top-to-bottom falloff between two lit levels.

    Built as one column stretched sideways (a nearest-neighbour resize only copies it), which costs far
    less than a bilinear resize of a full-size light map. The garment gets the light's side-to-side tilt
    through its fold shading.
    """
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    top, bottom = float(light[:2].mean()), float(light[2:].mean())
    column = np.array(colour, dtype=np.float64)[None, None, :] * (top + (bottom - top) * t)
    strip = Image.fromarray(np.clip(column, 0, 255).astype(np.uint8), "RGB")
    return strip.resize((width, height), Image.Resampling.NEAREST)


def _props(draw: ImageDraw.ImageDraw, width: int, height: int, colour: tuple[int, int, int],
           props: np.ndarray) -> None:
    """Label-free clutter for harder levels: low-contrast boxes, discs and a floor line."""
    for p in props:
        x, y = p[0] * width, p[1] * height
        r = 20 + p[2] * 70
        tone = shade(colour, 0.75 + 0.2 * p[3]) if p[4] < 0.7 else shade(colour, 1.3)
        if p[5] < 0.4:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tone)
        elif p[5] < 0.8:
            draw.rectangle((x - r, y - r * 0.6, x + r, y + r * 0.6), fill=tone)
        else:
            draw.rectangle((0, y, width, y + 3), fill=tone)


def _finish(image: Image.Image, cast: np.ndarray, level: Difficulty, noise_at: np.ndarray) -> Image.Image:
    """White balance / exposure and sensor noise over the whole photo."""
    w, h = image.size
    lut = np.clip(np.arange(256)[None, :] * cast[:, None] * 1.03, 0, 255).astype(np.uint8)
    image = image.point(lut.ravel().tolist())
    if level.noise:
        x, y = int(noise_at[0]), int(noise_at[1])
        image = ImageChops.add(image, _noise_tile(level.noise).crop((x, y, x + w, y + h)), 1.0, -128)
    return image


def encode_jpeg(image: Image.Image) -> bytes:
    """JPEG bytes at the image's own nuisance quality (deterministic for a given Pillow build)."""
    out = BytesIO()
    image.save(out, format="JPEG", quality=int(image.info.get("jpeg_quality", 90)))
    return out.getvalue()
