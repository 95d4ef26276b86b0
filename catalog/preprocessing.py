"""The preprocessing spec: how an image becomes the model's input tensor.

Training, export and the service all call :func:`preprocess` with the spec stored next to the
weights (in the checkpoint, then in the ONNX manifest), so what is trained is exactly what is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import numpy as np
from PIL import ExifTags, Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ResizeMode = Literal["stretch", "letterbox"]
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos"]
RESIZE_MODES: tuple[ResizeMode, ...] = get_args(ResizeMode)
DEFAULT_IMAGE_SIZE = 512
DEFAULT_RESIZE: ResizeMode = "stretch"
DEFAULT_INTERPOLATION: Interpolation = "bilinear"

_RESAMPLE: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_BACKGROUND = (255, 255, 255)


class PreprocessError(ValueError):
    """A spec that cannot be applied (bad size, unknown interpolation, …)."""


@dataclass(frozen=True)
class PreprocessSpec:
    """Resize to ``height`` x ``width`` (stretched, as published, or letterboxed on white), scale to
    [0, 1], normalise by ``mean``/``std``; the tensor is float32, RGB, channels first (NCHW)."""

    height: int = DEFAULT_IMAGE_SIZE
    width: int = DEFAULT_IMAGE_SIZE
    resize: ResizeMode = DEFAULT_RESIZE
    interpolation: Interpolation = DEFAULT_INTERPOLATION
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not (8 <= self.height <= 4096 and 8 <= self.width <= 4096):
            raise PreprocessError(f"image size {self.height}x{self.width} is outside 8..4096 pixels")
        if self.resize not in RESIZE_MODES:
            raise PreprocessError(f"unknown resize mode {self.resize!r}; allowed: {', '.join(map(repr, RESIZE_MODES))}")
        if self.interpolation not in _RESAMPLE:
            raise PreprocessError(
                f"unknown interpolation {self.interpolation!r}; allowed: {', '.join(map(repr, _RESAMPLE))}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise PreprocessError(f"mean and std need 3 values each and std > 0; got {self.mean}, {self.std}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.height, self.width)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> PreprocessSpec:
        known = {"height", "width", "resize", "interpolation", "mean", "std"}
        unknown = set(data) - known
        if unknown:
            raise PreprocessError(f"unknown preprocessing field(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: EXIF orientation applied, any mode converted, transparency composited on white."""
    image.load()  # the caller may close the file next
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        # Only then: with nothing to turn, exif_transpose returns a full copy of the image.
        image = ImageOps.exif_transpose(image) or image
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = _sixteen_bit_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _over_white(image if image.mode == "RGBA" else image.convert("RGBA"))
    return image.convert("RGB")


_ROWS_AT_ONCE = 256


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits rather than everything above 255 clipped to white. In blocks of
    rows: the float64 arithmetic over a whole 7000x7000 image would hold about 1 GB at once."""
    array = np.asarray(image)
    peak = max(float(array.max()), 1.0)
    scale = 255.0 / (65535.0 if peak > 255 else 255.0)
    out = np.empty(array.shape, dtype=np.uint8)
    for top in range(0, array.shape[0], _ROWS_AT_ONCE):
        block = array[top:top + _ROWS_AT_ONCE].astype(np.float64)
        out[top:top + _ROWS_AT_ONCE] = np.clip(block * scale, 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _over_white(rgba: Image.Image) -> Image.Image:
    """RGBA composited on white, as RGB. In blocks of rows, so a big transparent PNG needs about one RGB
    copy beside itself instead of four full-size intermediates (measured: 24 -> 9 bytes per pixel)."""
    out = Image.new("RGB", rgba.size)
    for top in range(0, rgba.height, _ROWS_AT_ONCE):
        box = (0, top, rgba.width, min(rgba.height, top + _ROWS_AT_ONCE))
        tile = rgba.crop(box)
        background = Image.new("RGBA", tile.size, (*_BACKGROUND, 255))
        out.paste(Image.alpha_composite(background, tile).convert("RGB"), box[:2])
    return out


def reduce_on_decode(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Ask a not-yet-decoded JPEG to decode in the DCT domain at the smallest scale (1/2..1/8) that stays
    at or above the target size on both sides (EXIF rotation may swap them). The service does this
    because big photos then decode several times faster, so training and export do it too: the same
    file gives the same tensor everywhere. A no-op for other formats and for already-decoded images."""
    if image.format in ("JPEG", "MPO") and getattr(image, "tile", None):
        side = max(spec.width, spec.height)
        image.draft("RGB", (side, side))
    return image


def resize(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Resize an RGB image to the spec's size (no normalisation)."""
    resample = _RESAMPLE[spec.interpolation]
    target = (spec.width, spec.height)
    if spec.resize == "stretch":
        return image.resize(target, resample)
    scale = min(spec.width / image.width, spec.height / image.height)
    inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", target, _BACKGROUND)
    canvas.paste(image.resize(inner, resample), ((spec.width - inner[0]) // 2, (spec.height - inner[1]) // 2))
    return canvas


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HWC uint8 -> CHW float32, scaled to [0, 1] then normalised."""
    mean = np.asarray(spec.mean, dtype=np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0)
    out = (pixels.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def preprocess(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """An opened image of any format and mode -> the model's float32 CHW input."""
    rgb = resize(to_rgb(reduce_on_decode(image, spec)), spec)
    return normalize(np.asarray(rgb, dtype=np.uint8), spec)
