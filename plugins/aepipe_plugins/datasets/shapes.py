"""``shapes``: a dSprites-like set of images with known factors of variation, drawn with Pillow.

Each image is one white (or coloured) shape on black. Its factors, each drawn uniformly and
independently from a grid of values by a seeded generator:

* ``shape``: the index in ``shapes`` (square, ellipse, heart, triangle by default); also the label;
* ``scale``: ``scales`` values from 0.5 to 1 (as dSprites); the shape's farthest point from its
  centroid lies ``scale * 0.2 * size`` pixels away, so its area grows as ``scale ** 2``;
* ``rotation``: ``rotations`` angles from 0 up to (not including) ``max_rotation`` degrees,
  anticlockwise on screen about the centroid. The default 90 degrees keeps every angle of the
  square (whose symmetry repeats every 90) distinct, as dSprites' full turn does not;
* ``x``, ``y``: ``positions`` values each for the column and the row of the centroid (``y`` counts
  downwards, as image rows do), spaced evenly so that the largest shape stays inside the frame;
* ``colour`` (``colour = true`` only): the index in a palette of ``colours`` colours.

Shapes are drawn at four times the size and averaged down (anti-aliased edges), as uint8 values
0-255 with ``value_range`` (0, 255): the model sees [0, 1]. The same seed and settings give the
same images and factors, bit for bit.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from aepipe.plugin import ComponentConfig, Dataset, RawData

SHAPES = ("square", "ellipse", "heart", "triangle")
#: the colours of the ``colour`` factor, in order (RGB 0-255)
PALETTE = ((255, 255, 255), (255, 64, 64), (64, 255, 64), (64, 96, 255), (255, 230, 64), (64, 230, 255), (255, 64, 255),
           (255, 160, 32))
SUPERSAMPLE = 4
#: the largest shape's radius (farthest point from its centroid) as a share of the image size
RADIUS = 0.2


class ShapesConfig(ComponentConfig):
    """``seed``: the generator's seed (images and factors); ``size``: 32 or 64 pixels square;
    ``examples``: how many images; ``colour``: RGB images with a ``colour`` factor of ``colours``
    values (else grey, no colour factor); ``shapes``: the shapes, in factor order; ``scales``,
    ``rotations``, ``positions``: how many values the scale, rotation and each of x and y take;
    ``max_rotation``: the rotations span [0, max_rotation) degrees."""

    seed: int = 0
    size: Literal[32, 64] = 32
    examples: int = Field(10_000, ge=10, le=1_000_000)
    colour: bool = False
    colours: int = Field(4, ge=1, le=len(PALETTE))
    shapes: list[Literal["square", "ellipse", "heart", "triangle"]] = Field(list(SHAPES), min_length=1)
    scales: int = Field(6, ge=1, le=64)
    rotations: int = Field(8, ge=1, le=360)
    positions: int = Field(10, ge=1, le=64)
    max_rotation: float = Field(90.0, gt=0.0, le=360.0)


def _outline(shape: str) -> np.ndarray:
    """The shape's polygon, ``(m, 2)`` points (x right, y down), centroid at the origin, the
    farthest point at distance 1."""
    t = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
    if shape == "square":
        p = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    elif shape == "triangle":
        a = np.deg2rad(-90.0 + 120.0 * np.arange(3))
        p = np.column_stack([np.cos(a), np.sin(a)])
    elif shape == "ellipse":
        p = np.column_stack([np.cos(t), 0.5 * np.sin(t)])
    else:  # heart: the classic parametric curve, its point downwards on screen
        p = np.column_stack(
            [16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))]
        )
    p = p - _centroid(p)
    return p / np.sqrt((p ** 2).sum(1)).max()


def _centroid(p: np.ndarray) -> np.ndarray:
    """The area centroid of a simple polygon (shoelace formula)."""
    x, y = p[:, 0], p[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2.0
    return np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6.0 * area)


class Shapes(Dataset):
    """dSprites-like shapes drawn from a seed, with their ground-truth factors (shape, scale, rotation, x, y)."""

    name = "shapes"
    Config = ShapesConfig

    @property
    def factor_names(self) -> tuple[str, ...]:
        return ("shape", "scale", "rotation", "x", "y") + (("colour",) if self.config.colour else ())

    def factor_values(self) -> dict[str, np.ndarray]:
        """What each factor's indices stand for: shape names, scales, degrees, pixel centres, RGB."""
        c = self.config
        r_max = RADIUS * c.size
        centres = (
            np.linspace(r_max + 0.5, c.size - r_max - 0.5, c.positions) if c.positions > 1 else np.array([c.size / 2.0])
        )
        values = {
            "shape": np.array(c.shapes),
            "scale": np.linspace(0.5, 1.0, c.scales) if c.scales > 1 else np.array([1.0]),
            "rotation": np.arange(c.rotations) * (c.max_rotation / c.rotations),
            "x": centres,
            "y": centres,
        }
        if c.colour:
            values["colour"] = np.array(PALETTE[: c.colours])
        return values

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` rows of factor indices, each factor uniform over its values."""
        sizes = [len(v) for v in self.factor_values().values()]
        return np.column_stack([rng.integers(0, k, n) for k in sizes]).astype(np.int64)

    def render(self, factors: np.ndarray) -> np.ndarray:
        """The images of rows of factor indices, uint8 ``(n, C, size, size)``."""
        from PIL import Image, ImageDraw

        c, values = self.config, self.factor_values()
        factors = np.asarray(factors, dtype=np.int64).reshape(-1, len(values))
        outlines = [_outline(s) for s in c.shapes]
        big = c.size * SUPERSAMPLE
        out = np.zeros((len(factors), 3 if c.colour else 1, c.size, c.size), dtype=np.uint8)
        for i, row in enumerate(factors):
            angle = np.deg2rad(values["rotation"][row[2]])
            # anticlockwise on screen, where y points down
            turn = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
            radius = values["scale"][row[1]] * RADIUS * c.size
            centre = np.array([values["x"][row[3]], values["y"][row[4]]])
            points = (outlines[row[0]] @ turn.T * radius + centre) * SUPERSAMPLE
            canvas = Image.new("L", (big, big), 0)
            ImageDraw.Draw(canvas).polygon([tuple(q) for q in points], fill=255)
            mask = np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.uint16)
            if c.colour:
                rgb = np.asarray(values["colour"][row[5]], dtype=np.uint16)
                out[i] = (mask[None] * rgb[:, None, None] + 127) // 255
            else:
                out[i, 0] = mask
        return out

    def load(self) -> RawData:
        c = self.config
        factors = self.sample_factors(c.examples, np.random.default_rng(c.seed))
        x = self.render(factors)
        return RawData(x, factors[:, 0].copy(), (0.0, 255.0), tuple(x.shape[1:]), len(c.shapes),
                       source=f"generated: shapes seed={c.seed} size={c.size} "
                              f"examples={c.examples}{' colour' if c.colour else ''}",
                       factors=factors, factor_names=self.factor_names)
