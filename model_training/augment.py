"""Training augmentation on PIL images, before the shared preprocessing resizes and normalises.

With probability ``p`` an image gets a random resized crop (80 to 100 % of the area), a horizontal
flip (half the time) and a small rotation (white fill, like the catalog's backgrounds); otherwise it is
left alone. No hue, saturation or brightness jitter: colour is one of the labels. The final resize to
the model's input is always :func:`catalog.preprocessing.preprocess`, the same code the service runs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image

_WHITE = (255, 255, 255)


@dataclass
class Augment:
    p: float = 0.5
    max_rotation: float = 10.0
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        if rng.random() >= self.p:
            return image
        image = self.random_resized_crop(image, rng)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.max_rotation > 0:
            angle = rng.uniform(-self.max_rotation, self.max_rotation)
            image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=_WHITE)
        return image

    def random_resized_crop(self, image: Image.Image, rng: random.Random) -> Image.Image:
        """A crop covering ``scale`` of the area at an aspect ratio within ``ratio`` (torchvision's rule),
        kept at the original size so the later resize sees the same input size either way."""
        width, height = image.size
        area = width * height
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = rng.randint(0, width - w)
                top = rng.randint(0, height - h)
                return image.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.BILINEAR)
        return image
