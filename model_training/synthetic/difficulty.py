"""How subtle the label cues are and how much label-independent nuisance each image gets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Difficulty:
    name: str
    cue: float  # 1 = cues at full strength; smaller pulls geometry together and lowers print contrast
    rotation_deg: float  # max |rotation| of the garment
    scale_jitter: float  # relative spread of the garment's size in the frame
    shift: float  # max offset of the garment centre, as a fraction of the free space
    light: float  # strength of the lighting gradient
    colour_jitter: float  # per-channel spread of dye/white-balance variation
    noise: int  # sensor-noise amplitude (0 = none)
    jpeg_quality: tuple[int, int]
    clutter: int  # number of label-free props/shapes in the background


LEVELS: dict[str, Difficulty] = {
    "easy": Difficulty("easy", 1.0, 2.0, 0.04, 0.2, 0.08, 0.02, 0, (88, 95), 0),
    "medium": Difficulty("medium", 0.75, 5.0, 0.10, 0.5, 0.18, 0.05, 4, (70, 95), 1),
    "hard": Difficulty("hard", 0.5, 9.0, 0.18, 0.9, 0.30, 0.09, 9, (45, 85), 3),
}


def get_difficulty(name: str) -> Difficulty:
    try:
        return LEVELS[name]
    except KeyError:
        raise ValueError(f"unknown difficulty {name!r}; valid: {', '.join(LEVELS)}") from None
