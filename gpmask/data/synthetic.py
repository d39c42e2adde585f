"""Synthetic adverse weather on any clean image: rain with haze, raindrops, snow.

The public multi-weather sets cannot be downloaded where gpmask is built, so the
project trains and evaluates on weather it renders itself. Each renderer follows the
physics the public sets were made with, loosely:

- **rain**: atmospheric scattering ``I = J*t + A*(1-t)`` with the transmission
  ``t = exp(-beta*d)`` of a smooth pseudo-depth map ``d`` (the "haze" of
  Outdoor-Rain), plus several layers of rain streaks: random points smeared by a
  motion-blur line kernel at one common wind angle, longer, thicker and brighter in
  the near layers, screen-blended onto the hazy image;
- **raindrop**: water drops on the lens act as small wide-angle lenses; each drop
  shows a defocused, minified and flipped view of the scene around it, with a bright
  rim (as in the Raindrop set). The camera is focused on the scene, far behind the
  glass, so the whole drop layer (silhouettes, the views inside and the rims) is out
  of focus: it is blurred by one lens defocus, which makes drops soft blobs whose
  edges, and small drops altogether, are partly transparent. Drops are 8-32 px
  across, a few percent of the <= 512 px frames the sample images are scaled to, as
  drops typically are in the Raindrop set's frames;
- **snow**: layers of flakes from far (many, tiny, faint) to near (few, large,
  blurred), alpha-blended in white, with a faint veil (as in Snow100K).

Rendering is seeded and deterministic: the same (image, weather, seed, severity)
gives a bit-identical result. Every random field is drawn in full whatever the
severity, and severity only scales thresholds, opacities and haze, so a higher
severity adds to the weather of a lower one: PSNR falls monotonically with it.
Sizes are in pixels, independent of the image size, so crops of a large image and a
small whole image see the same weather.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from gpmask.errors import GpmaskError

WEATHERS = ("rain", "raindrop", "snow")


@dataclass(frozen=True)
class StreakLayer:
    """One depth layer of rain streaks (lengths and widths in pixels)."""

    density: float  # fraction of pixels that start a streak at severity 1
    length: tuple[float, float]  # streak length range
    width_sigma: float  # Gaussian widening of the one-pixel line
    opacity: float  # peak opacity of a streak


#: Rain streak layers, far to near.
RAIN_LAYERS = (
    StreakLayer(density=0.004, length=(6, 12), width_sigma=0.5, opacity=0.45),
    StreakLayer(density=0.0015, length=(14, 24), width_sigma=0.8, opacity=0.65),
    StreakLayer(density=0.0005, length=(26, 40), width_sigma=1.2, opacity=0.85),
)


@dataclass(frozen=True)
class FlakeLayer:
    """One depth layer of snowflakes (radius and blur in pixels)."""

    density: float  # fraction of pixels holding a flake centre at severity 1
    radius: int  # flake disc radius (0: a single pixel)
    blur_sigma: float  # defocus of the layer
    opacity: float  # peak opacity of a flake


#: Snow layers, far to near.
SNOW_LAYERS = (
    FlakeLayer(density=0.006, radius=0, blur_sigma=0.6, opacity=0.7),
    FlakeLayer(density=0.002, radius=1, blur_sigma=0.8, opacity=0.8),
    FlakeLayer(density=0.0005, radius=2, blur_sigma=1.4, opacity=0.9),
    FlakeLayer(density=0.00006, radius=5, blur_sigma=2.5, opacity=0.85),
)

#: Raindrops: candidate drops per pixel (a drop is kept when its draw is below
#: severity * RAINDROP_KEEP), radius range in pixels, defocus of the scene seen
#: through a drop, opacity range of a drop's silhouette, and the camera's defocus of
#: the drop layer (Gaussian sigma in pixels; the camera focuses past the glass).
RAINDROP_CANDIDATES_PER_PIXEL = 1 / 500
RAINDROP_KEEP = 0.6
RAINDROP_RADIUS = (4.0, 16.0)
RAINDROP_DEFOCUS_SIGMA = 2.5
RAINDROP_OPACITY = (0.85, 1.0)
RAINDROP_LENS_SIGMA = 3.0


def degrade(clean: np.ndarray, weather: str, seed: int, severity: float = 1.0) -> np.ndarray:
    """Render ``weather`` onto ``clean`` (float HxWx3 RGB in [0, 1]); float32 in [0, 1].

    ``seed`` (a non-negative int) picks the random weather; ``severity`` scales its
    density, opacity and haze (0 leaves the image as it is, 1 is the default strength
    the trainer and the demo model use).
    """
    if weather not in _RENDERERS:
        raise GpmaskError(
            f"unknown synthetic weather {weather!r}; known weathers: {', '.join(WEATHERS)}"
        )
    image = np.asarray(clean)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise GpmaskError(f"clean image must be HxWx3 RGB, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise GpmaskError(f"clean image must be float in [0, 1], got dtype {image.dtype}")
    if not (np.isfinite(severity) and severity >= 0):
        raise GpmaskError(f"severity must be a finite number >= 0, got {severity}")
    if int(seed) != seed or seed < 0:
        raise GpmaskError(f"seed must be a non-negative integer, got {seed!r}")
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    if severity == 0:
        return image
    streams = np.random.SeedSequence([int(seed), zlib.crc32(weather.encode())])
    rendered = _RENDERERS[weather](image, streams, float(severity))
    return np.clip(rendered, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------ shared
def _generators(streams: np.random.SeedSequence, count: int) -> list[np.random.Generator]:
    """Independent generators, one per component, so each draws the same whatever the others do."""
    return [np.random.default_rng(child) for child in streams.spawn(count)]


def _line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A motion-blur kernel: an anti-aliased line through the centre, tapered at both ends.

    ``angle_deg`` is measured from vertical. Peak 1, so a smeared point keeps its
    brightness at the streak's middle.
    """
    size = int(np.ceil(length)) | 1
    half = (length - 1) / 2
    centre = size // 2
    theta = np.deg2rad(angle_deg)
    dx, dy = half * np.sin(theta), half * np.cos(theta)
    shift = 4  # cv2.line's fractional bits: sub-pixel end points
    scale = 1 << shift
    canvas = np.zeros((size, size), np.float32)
    start = (round((centre - dx) * scale), round((centre - dy) * scale))
    end = (round((centre + dx) * scale), round((centre + dy) * scale))
    cv2.line(canvas, start, end, 1.0, 1, cv2.LINE_AA, shift)
    ys, xs = np.mgrid[:size, :size] - centre
    taper = np.clip(1.0 - (np.hypot(xs, ys) / max(half, 1.0)) ** 2, 0.15, 1.0)
    return canvas * taper.astype(np.float32)


def _blurred_peak(kernel: np.ndarray, sigma: float) -> float:
    """Peak of ``kernel`` after a Gaussian blur, on zero padding: what one isolated
    point becomes, so a layer can be rescaled to reach its opacity."""
    pad = int(np.ceil(3 * sigma))
    padded = cv2.copyMakeBorder(kernel, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return float(cv2.GaussianBlur(padded, (0, 0), sigma).max())


def _smooth_field(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a coarse grid, cubic upsampling, blur."""
    coarse = rng.random((height // cell + 3, width // cell + 3), dtype=np.float32)
    field = cv2.resize(coarse, ((width // cell + 3) * cell, (height // cell + 3) * cell),
                       interpolation=cv2.INTER_CUBIC)[cell: cell + height, cell: cell + width]
    field = cv2.GaussianBlur(field, (0, 0), cell / 3)
    low, high = float(field.min()), float(field.max())
    return (field - low) / (high - low) if high > low else np.zeros_like(field)


# ------------------------------------------------------------------------ rain
def _rain(image: np.ndarray, streams: np.random.SeedSequence, severity: float) -> np.ndarray:
    haze_rng, angle_rng, *layer_rngs = _generators(streams, 2 + len(RAIN_LAYERS))
    height, width = image.shape[:2]

    # Haze: the top of a picture is usually farther away; local variation on top.
    rows = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
    depth = 0.6 * rows + 0.4 * _smooth_field(haze_rng, height, width, cell=64)
    beta = haze_rng.uniform(0.25, 0.5) * severity
    transmission = np.exp(-beta * (0.2 + depth))[..., None]
    airlight = haze_rng.uniform(0.75, 0.92) + haze_rng.uniform(-0.03, 0.03, size=3)
    hazy = image * transmission + airlight.astype(np.float32) * (1.0 - transmission)

    # Streaks: one wind angle, a little jitter per layer.
    angle = angle_rng.uniform(-25.0, 25.0)
    streaks = np.zeros((height, width), np.float32)
    for layer, rng in zip(RAIN_LAYERS, layer_rngs, strict=True):
        starts = rng.random((height, width), dtype=np.float32)
        brightness = rng.uniform(0.5, 1.0, size=(height, width)).astype(np.float32)
        length = rng.uniform(*layer.length)
        kernel = _line_kernel(length, angle + rng.uniform(-3.0, 3.0))
        points = np.where(starts < layer.density * severity, brightness, 0.0).astype(np.float32)
        smeared = cv2.filter2D(points, -1, kernel, borderType=cv2.BORDER_REFLECT)
        smeared = cv2.GaussianBlur(smeared, (0, 0), layer.width_sigma)
        peak = _blurred_peak(kernel, layer.width_sigma)
        streaks = np.maximum(streaks, np.clip(smeared / peak, 0.0, 1.0) * layer.opacity)
    streaks = streaks[..., None]
    return hazy + streaks * (1.0 - hazy)


# ------------------------------------------------------------------------ raindrop
def _raindrop(image: np.ndarray, streams: np.random.SeedSequence, severity: float) -> np.ndarray:
    place_rng, shape_rng = _generators(streams, 2)
    height, width = image.shape[:2]

    count = max(1, round(height * width * RAINDROP_CANDIDATES_PER_PIXEL))
    centres = place_rng.uniform((0, 0), (width, height), size=(count, 2))
    keep = place_rng.random(count) < RAINDROP_KEEP * severity
    low, high = RAINDROP_RADIUS
    radii = low + (high - low) * shape_rng.random(count) ** 2  # small drops are common
    aspects = shape_rng.uniform(0.75, 1.0, count)  # minor / major axis
    tilts = shape_rng.uniform(0.0, np.pi, count)
    zooms = shape_rng.uniform(1.5, 3.0, count)  # how much wider the drop's view is
    offsets = shape_rng.uniform(-0.5, 0.5, (count, 2)) * radii[:, None]
    opacities = shape_rng.uniform(*RAINDROP_OPACITY, count)
    rim_strengths = shape_rng.uniform(0.12, 0.3, count)

    map_x, map_y = (grid.astype(np.float32) for grid in np.meshgrid(np.arange(width),
                                                                     np.arange(height)))
    alpha = np.zeros((height, width), np.float32)
    rim = np.zeros((height, width), np.float32)
    for i in np.flatnonzero(keep):
        (cx, cy), major = centres[i], radii[i]
        minor = major * aspects[i]
        reach = int(np.ceil(major * 1.2)) + 1
        x0, x1 = max(0, int(cx) - reach), min(width, int(cx) + reach + 1)
        y0, y1 = max(0, int(cy) - reach), min(height, int(cy) + reach + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        cos, sin = np.cos(tilts[i]), np.sin(tilts[i])
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        radius = np.sqrt((u / major) ** 2 + (v / minor) ** 2)
        # The drop refracts (and flips) a wider patch of the scene; a slightly larger
        # region than the drop is remapped so the soft edge blends into drop content.
        inside = radius <= 1.15
        box = (slice(y0, y1), slice(x0, x1))
        zoom = zooms[i]
        map_x[box] = np.where(inside, cx + offsets[i, 0] - dx * zoom, map_x[box])
        map_y[box] = np.where(inside, cy + offsets[i, 1] - dy * zoom, map_y[box])
        alpha[box] = np.maximum(alpha[box], np.where(radius <= 1.0, opacities[i], 0.0))
        ring = np.exp(-(((radius - 0.92) / 0.06) ** 2)) * rim_strengths[i]
        rim[box] = np.maximum(rim[box], ring.astype(np.float32))

    # The camera is focused on the scene, far behind the glass: everything on the
    # glass, the drops' silhouettes, the views inside them and their rims, is blurred
    # by the same lens defocus. The blurred silhouette is the drop's coverage, so drop
    # edges (and whole drops smaller than the blur) let the sharp scene show through.
    defocused = cv2.GaussianBlur(image, (0, 0), RAINDROP_DEFOCUS_SIGMA)
    refracted = cv2.remap(defocused, map_x, map_y, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
    lens = RAINDROP_LENS_SIGMA
    drops = cv2.GaussianBlur(refracted * alpha[..., None], (0, 0), lens)
    alpha = cv2.GaussianBlur(alpha, (0, 0), lens)[..., None]
    rim = cv2.GaussianBlur(rim, (0, 0), lens)[..., None]
    # Below one 8-bit level the blur's tails are no drop: the scene stays exact there.
    clear = alpha < 1 / 255
    alpha, drops, rim = (np.where(clear, 0.0, x).astype(np.float32) for x in (alpha, drops, rim))
    dropped = image * (1.0 - alpha) + drops
    return dropped + rim * (1.0 - dropped)


# ------------------------------------------------------------------------ snow
def _snow(image: np.ndarray, streams: np.random.SeedSequence, severity: float) -> np.ndarray:
    veil_rng, *layer_rngs = _generators(streams, 1 + len(SNOW_LAYERS))
    height, width = image.shape[:2]

    veil = veil_rng.uniform(0.04, 0.08) * min(severity, 2.0)
    snowy = image * (1.0 - veil) + np.float32(0.9 * veil)
    for layer, rng in zip(SNOW_LAYERS, layer_rngs, strict=True):
        centres = rng.random((height, width), dtype=np.float32)
        brightness = rng.uniform(0.6, 1.0, size=(height, width)).astype(np.float32)
        flake = rng.uniform(0.9, 1.0)  # flake colour: white, a little grey in the shade
        points = np.where(centres < layer.density * severity, brightness, 0.0)
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * layer.radius + 1,) * 2)
        flakes = cv2.dilate(points.astype(np.float32), disc)
        flakes = cv2.GaussianBlur(flakes, (0, 0), layer.blur_sigma)
        peak = _blurred_peak(disc.astype(np.float32), layer.blur_sigma)
        coverage = (np.clip(flakes / peak, 0.0, 1.0) * layer.opacity)[..., None]
        snowy = snowy * (1.0 - coverage) + np.float32(flake) * coverage
    return snowy


_RENDERERS: dict[str, Callable[[np.ndarray, np.random.SeedSequence, float], np.ndarray]] = {
    "rain": _rain,
    "raindrop": _raindrop,
    "snow": _snow,
}
