"""Synthetic adverse weather on any clean image: rain with haze, raindrops, snow.

The public multi-weather sets cannot be downloaded where gpmask is built, so the
project trains and evaluates on weather it renders itself. Each renderer follows the
physics the public sets were made with, loosely:

- **rain**: atmospheric scattering ``I = J*t + A*(1-t)`` with the transmission
  ``t = exp(-beta*d)`` of a smooth pseudo-depth map ``d`` (the "haze" of
  Outdoor-Rain), plus layers of rain streaks, longer, wider and brighter in the near
  layers, screen-blended onto the hazy image;
- **raindrop**: water drops on the lens act as small wide-angle lenses; each drop
  shows a defocused, minified and flipped view of the scene around it, with a rim (as
  in the Raindrop set). The camera is focused on the scene, far behind the glass, so
  the whole drop layer (silhouettes, the views inside and the rims) is blurred by one
  lens defocus: drops are soft blobs whose edges, and small drops altogether, are
  partly transparent;
- **snow**: layers of flakes from far (many, tiny, faint) to near (few, large,
  blurred), smeared by their fall during the exposure, alpha-blended in white-ish,
  with a faint veil (as in Snow100K).

**Styles.** A model trained on one fixed look learns that look: gpmask's first
demo model, trained on one drop shape and blur, gained under 1 dB on drops rendered
differently. So every image draws its own look (:class:`RainLook`, :class:`DropLook`,
:class:`SnowLook`) from wide ranges, and the ranges come in two disjoint *styles*:

- ``train``: what the trainer, calibration, router and demo clip use;
- ``heldout``: a second rendering family that training never sees, to measure
  generalisation (``gpmask eval --style heldout``). It changes the primitives (rain:
  hard-edged line segments each at its own angle, instead of smeared points at one
  angle per layer; raindrops: teardrops hanging under gravity with dark rims, instead
  of wobbly ellipses with bright rims; snow: six-armed star flakes instead of discs)
  and moves the optical ranges outside the training ones (thicker and darker haze,
  steeper wind, thicker streaks, stronger refraction, more defocus, brighter drops,
  longer fall streaks, a thicker veil: :data:`DISJOINT_RANGES`). The tables
  :data:`TRAIN_RANGES` and :data:`HELDOUT_RANGES` list every range side by side.

Rendering is seeded and deterministic: the same (image, weather, seed, severity,
style) gives a bit-identical result. The look and every random field are drawn in full
whatever the severity, and severity only scales thresholds, opacities and haze, so a
higher severity adds to the weather of a lower one: PSNR falls monotonically with it.
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
STYLES = ("train", "heldout")

Range = tuple[float, float]

#: Ranges every look is drawn from, per style (uniform unless a name says ``log``).
TRAIN_RANGES: dict[str, Range] = {
    # rain
    "haze_beta": (0.1, 0.6),  # extinction at severity 1
    "airlight": (0.65, 0.95),  # brightness of the haze
    "wind": (-32.0, 32.0),  # streak angle from vertical, degrees
    "streak_layers": (2, 4),  # depth layers of streaks
    "streak_length": (4.0, 60.0),  # pixels, spread over the layers
    "streak_width": (0.3, 1.5),  # Gaussian sigma of a smear (heldout: line thickness), px
    "streak_opacity": (0.35, 0.9),
    "streak_log_density": (np.log(2e-4), np.log(6e-3)),  # streak starts per pixel
    # raindrop
    "drop_log_per_pixel": (np.log(1 / 600), np.log(1 / 220)),  # candidate drops per pixel
    "drop_radius_low": (2.5, 6.0),  # per image, the smallest and largest drops
    "drop_radius_high": (10.0, 20.0),
    "drop_wobble": (0.0, 0.15),  # boundary harmonics relative to the radius
    "drop_zoom": (1.3, 3.2),  # how much wider the view inside a drop is
    "drop_scene_blur": (1.5, 3.5),  # defocus of that view, sigma in pixels
    "drop_lens_blur": (1.5, 3.5),  # camera defocus of the drop layer
    "drop_rim": (0.05, 0.35),  # bright rim strength
    "drop_exposure": (0.85, 1.2),  # drops brighter or darker than the scene
    # snow
    "snow_veil": (0.02, 0.11),
    "flake_layers": (2, 5),
    "flake_log_density": (np.log(2e-3), np.log(1.5e-2)),  # per pixel, over (1 + radius)^2
    "flake_radius": (0, 6),
    "flake_blur": (0.4, 2.8),
    "flake_opacity": (0.55, 0.95),
    "flake_fall": (0.0, 7.0),  # motion-blur length during the exposure, pixels
    # every weather
    "tint": (-0.05, 0.05),  # per-channel colour jitter of the weather's light
}
HELDOUT_RANGES: dict[str, Range] = {
    "haze_beta": (0.65, 0.8),
    "airlight": (0.55, 0.62),
    "wind": (36.0, 44.0),  # either side of vertical
    "streak_layers": (1, 2),
    "streak_length": (20.0, 45.0),
    "streak_width": (1.6, 2.4),  # line thickness (rounded: 2 px)
    "streak_opacity": (0.45, 0.7),
    "streak_log_density": (np.log(4e-4), np.log(1.5e-3)),
    "drop_log_per_pixel": (np.log(1 / 900), np.log(1 / 450)),
    "drop_radius_low": (6.5, 8.0),
    "drop_radius_high": (12.0, 20.0),
    "drop_wobble": (0.0, 0.0),
    "drop_zoom": (3.5, 4.5),
    "drop_scene_blur": (4.0, 5.0),
    "drop_lens_blur": (4.0, 5.0),
    "drop_rim": (0.15, 0.3),  # a dark rim
    "drop_exposure": (1.25, 1.35),
    "snow_veil": (0.12, 0.16),
    "flake_layers": (2, 3),
    "flake_log_density": (np.log(4e-3), np.log(1.5e-2)),
    "flake_radius": (3, 5),
    "flake_blur": (0.8, 1.6),
    "flake_opacity": (0.75, 0.95),
    "flake_fall": (8.0, 11.0),
    "tint": (-0.03, 0.03),
}
_RANGES = {"train": TRAIN_RANGES, "heldout": HELDOUT_RANGES}
#: The scalar ranges that do not overlap between the styles. The others (amounts and
#: sizes) overlap on purpose: the held-out style tests other shapes and optics, not
#: more or less weather than training saw.
DISJOINT_RANGES = (
    "haze_beta", "airlight", "wind", "streak_width", "drop_zoom", "drop_scene_blur",
    "drop_lens_blur", "drop_exposure", "snow_veil", "flake_fall",
)


def degrade(
    clean: np.ndarray,
    weather: str,
    seed: int,
    severity: float = 1.0,
    style: str = "train",
    look_seed: int | None = None,
) -> np.ndarray:
    """Render ``weather`` onto ``clean`` (float HxWx3 RGB in [0, 1]); float32 in [0, 1].

    ``seed`` (a non-negative int) picks the look and the random weather; ``severity``
    scales its density, opacity and haze (0 leaves the image as it is, 1 is the
    default strength the trainer and the demo model use); ``style`` picks the family
    of looks (``train`` or ``heldout``, see the module docstring). ``look_seed``, if
    given, picks the look instead of ``seed``: the frames of a video keep one look
    (haze, wind, flake sizes) while their streaks and flakes are drawn anew.
    """
    if weather not in _RENDERERS:
        raise GpmaskError(
            f"unknown synthetic weather {weather!r}; known weathers: {', '.join(WEATHERS)}"
        )
    if style not in _RANGES:
        raise GpmaskError(f"unknown weather style {style!r}; use one of {', '.join(STYLES)}")
    image = np.asarray(clean)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise GpmaskError(f"clean image must be HxWx3 RGB, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise GpmaskError(f"clean image must be float in [0, 1], got dtype {image.dtype}")
    if not (np.isfinite(severity) and severity >= 0):
        raise GpmaskError(f"severity must be a finite number >= 0, got {severity}")
    for name, value in (("seed", seed), ("look seed", 0 if look_seed is None else look_seed)):
        if int(value) != value or value < 0:
            raise GpmaskError(f"{name} must be a non-negative integer, got {value!r}")
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    if severity == 0:
        return image
    streams = np.random.SeedSequence(
        [int(seed), zlib.crc32(weather.encode()), zlib.crc32(style.encode())]
    )
    look_stream, field_stream = streams.spawn(2)
    if look_seed is not None:
        look_stream = np.random.SeedSequence(
            [int(look_seed), zlib.crc32(weather.encode()), zlib.crc32(style.encode()), 1]
        )
    draw, render = _RENDERERS[weather]
    look = draw(np.random.default_rng(look_stream), style)
    rendered = render(image, look, field_stream, float(severity))
    return np.clip(rendered, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------ shared
def _generators(streams: np.random.SeedSequence, count: int) -> list[np.random.Generator]:
    """Independent generators, one per component, so each draws the same whatever the others do."""
    return [np.random.default_rng(child) for child in streams.spawn(count)]


def _uniform(rng: np.random.Generator, ranges: dict[str, Range], name: str) -> float:
    return float(rng.uniform(*ranges[name]))


def _integer(rng: np.random.Generator, ranges: dict[str, Range], name: str) -> int:
    low, high = ranges[name]
    return int(rng.integers(int(low), int(high) + 1))


def _tint(rng: np.random.Generator, ranges: dict[str, Range]) -> np.ndarray:
    """A per-channel multiplier near 1: the colour cast of the weather's light."""
    return (1.0 + rng.uniform(*ranges["tint"], size=3)).astype(np.float32)


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
@dataclass(frozen=True)
class StreakLayer:
    """One depth layer of rain streaks (lengths and widths in pixels)."""

    density: float  # fraction of pixels that start a streak at severity 1
    length: float  # streak length
    width_sigma: float  # Gaussian widening of the streak
    opacity: float  # peak opacity of a streak


@dataclass(frozen=True)
class RainLook:
    """One image's rain: haze, wind and streak layers (far to near)."""

    haze_beta: float
    airlight: np.ndarray  # RGB colour of the haze
    wind: float  # degrees from vertical
    layers: tuple[StreakLayer, ...]
    tint: np.ndarray  # RGB colour of the streaks
    segments: bool  # heldout: hard line segments, each at its own angle


def _draw_rain(rng: np.random.Generator, style: str) -> RainLook:
    ranges = _RANGES[style]
    count = _integer(rng, ranges, "streak_layers")
    lengths = np.sort(rng.uniform(*ranges["streak_length"], size=count))
    widths = np.sort(rng.uniform(*ranges["streak_width"], size=count))
    opacities = np.sort(rng.uniform(*ranges["streak_opacity"], size=count))
    densities = np.sort(np.exp(rng.uniform(*ranges["streak_log_density"], size=count)))[::-1]
    layers = tuple(StreakLayer(float(d), float(n), float(w), float(o))
                   for d, n, w, o in zip(densities, lengths, widths, opacities, strict=True))
    airlight = _uniform(rng, ranges, "airlight") * _tint(rng, ranges)
    wind = _uniform(rng, ranges, "wind") * (rng.choice([-1.0, 1.0]) if style == "heldout" else 1)
    return RainLook(_uniform(rng, ranges, "haze_beta"), airlight.astype(np.float32), wind,
                    layers, _tint(rng, ranges), segments=style == "heldout")


def _streak_segments(
    rng: np.random.Generator, shape: tuple[int, int], layer: StreakLayer, wind: float,
    severity: float,
) -> np.ndarray:
    """Hard-edged line segments (``width_sigma`` px thick, rounded), each at its own angle
    within 10 degrees of the wind; peak 1."""
    height, width = shape
    starts = rng.random((height, width), dtype=np.float32)
    angles = rng.uniform(-10.0, 10.0, size=(height, width)).astype(np.float32)
    ys, xs = np.nonzero(starts < layer.density * severity)
    canvas = np.zeros(shape, np.float32)
    half = layer.length / 2
    for y, x in zip(ys, xs, strict=True):
        theta = np.deg2rad(wind + angles[y, x])
        dx, dy = half * np.sin(theta), half * np.cos(theta)
        cv2.line(canvas, (round(x - dx), round(y - dy)), (round(x + dx), round(y + dy)), 1.0,
                 max(1, round(layer.width_sigma)), cv2.LINE_AA)
    return np.clip(cv2.GaussianBlur(canvas, (0, 0), 0.5), 0.0, 1.0)


def _streak_smears(
    rng: np.random.Generator, shape: tuple[int, int], layer: StreakLayer, wind: float,
    severity: float,
) -> np.ndarray:
    """Random points smeared by a tapered motion-blur line at the layer's angle (peak 1)."""
    starts = rng.random(shape, dtype=np.float32)
    brightness = rng.uniform(0.5, 1.0, size=shape).astype(np.float32)
    kernel = _line_kernel(layer.length, wind + rng.uniform(-4.0, 4.0))
    points = np.where(starts < layer.density * severity, brightness, 0.0).astype(np.float32)
    smeared = cv2.filter2D(points, -1, kernel, borderType=cv2.BORDER_REFLECT)
    smeared = cv2.GaussianBlur(smeared, (0, 0), layer.width_sigma)
    return np.clip(smeared / _blurred_peak(kernel, layer.width_sigma), 0.0, 1.0)


def _rain(image: np.ndarray, look: RainLook, streams: np.random.SeedSequence,
          severity: float) -> np.ndarray:
    haze_rng, *layer_rngs = _generators(streams, 1 + len(look.layers))
    height, width = image.shape[:2]

    # Haze: the top of a picture is usually farther away; local variation on top.
    rows = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
    depth = 0.6 * rows + 0.4 * _smooth_field(haze_rng, height, width, cell=64)
    transmission = np.exp(-look.haze_beta * severity * (0.2 + depth))[..., None]
    hazy = image * transmission + look.airlight * (1.0 - transmission)

    draw = _streak_segments if look.segments else _streak_smears
    streaks = np.zeros((height, width), np.float32)
    for layer, rng in zip(look.layers, layer_rngs, strict=True):
        drawn = draw(rng, (height, width), layer, look.wind, severity)
        streaks = np.maximum(streaks, drawn * layer.opacity * min(severity, 1.0))
    streaks = streaks[..., None] * look.tint
    return hazy + streaks * (1.0 - hazy)


# ------------------------------------------------------------------------ raindrop
@dataclass(frozen=True)
class DropLook:
    """One image's drops on the lens (sizes and blurs in pixels)."""

    per_pixel: float  # candidate drops per pixel (60 % are kept at severity 1)
    radius: Range  # smallest and largest drop
    wobble: float  # amplitude of the boundary's harmonics (0: an ellipse)
    zoom: Range  # how much wider the view inside a drop is
    scene_blur: float  # defocus of that view
    lens_blur: float  # camera defocus of the whole drop layer
    rim: float  # rim strength (bright for ``train``, dark for ``heldout``)
    exposure: float  # the drops' brightness relative to the scene
    tint: np.ndarray  # colour cast of the drops
    teardrop: bool  # heldout: round tops with tails pulled down by gravity


#: Fraction of candidate drops kept at severity 1 (severity scales the threshold).
RAINDROP_KEEP = 0.6


def _draw_raindrop(rng: np.random.Generator, style: str) -> DropLook:
    ranges = _RANGES[style]
    zoom = _uniform(rng, ranges, "drop_zoom")
    return DropLook(
        per_pixel=float(np.exp(_uniform(rng, ranges, "drop_log_per_pixel"))),
        radius=(_uniform(rng, ranges, "drop_radius_low"),
                _uniform(rng, ranges, "drop_radius_high")),
        wobble=_uniform(rng, ranges, "drop_wobble"),
        zoom=(zoom, min(zoom * 1.3, ranges["drop_zoom"][1])),
        scene_blur=_uniform(rng, ranges, "drop_scene_blur"),
        lens_blur=_uniform(rng, ranges, "drop_lens_blur"),
        rim=_uniform(rng, ranges, "drop_rim"),
        exposure=_uniform(rng, ranges, "drop_exposure"),
        tint=_tint(rng, ranges),
        teardrop=style == "heldout",
    )


def _drop_radius(u: np.ndarray, v: np.ndarray, major: float, minor: float, look: DropLook,
                 phases: np.ndarray) -> np.ndarray:
    """Normalised distance from a drop's centre: 1 on its boundary."""
    if look.teardrop:
        # Round above, a tail below (v grows downward): stretched and narrowed there.
        tail = np.clip(v / major, 0.0, None)
        stretch = major * (1 + 0.35 * tail)  # the tail ends about 1.5 radii below the centre
        return np.sqrt((u * (1 + 0.8 * tail) / minor) ** 2 + (v / stretch) ** 2)
    radius = np.sqrt((u / major) ** 2 + (v / minor) ** 2)
    if look.wobble > 0:
        angle = np.arctan2(v, u)
        bumps = sum(np.cos(k * angle + phases[k - 2]) for k in (2, 3, 5)) / 3
        radius = radius / (1 + look.wobble * bumps)
    return radius


def _raindrop(image: np.ndarray, look: DropLook, streams: np.random.SeedSequence,
              severity: float) -> np.ndarray:
    place_rng, shape_rng = _generators(streams, 2)
    height, width = image.shape[:2]

    count = max(1, round(height * width * look.per_pixel))
    centres = place_rng.uniform((0, 0), (width, height), size=(count, 2))
    keep = place_rng.random(count) < RAINDROP_KEEP * severity
    low, high = look.radius
    radii = low + (high - low) * shape_rng.random(count) ** 2  # small drops are common
    aspects = shape_rng.uniform(0.6, 1.0, count)  # minor / major axis
    tilts = shape_rng.uniform(0.0, np.pi, count)
    zooms = shape_rng.uniform(*look.zoom, count)
    offsets = shape_rng.uniform(-0.5, 0.5, (count, 2)) * radii[:, None]
    opacities = shape_rng.uniform(0.8, 1.0, count)
    rims = shape_rng.uniform(0.6, 1.0, count) * look.rim
    phases = shape_rng.uniform(0.0, 2 * np.pi, (count, 4))

    map_x, map_y = (grid.astype(np.float32) for grid in np.meshgrid(np.arange(width),
                                                                     np.arange(height)))
    alpha = np.zeros((height, width), np.float32)
    rim = np.zeros((height, width), np.float32)
    for i in np.flatnonzero(keep):
        (cx, cy), major = centres[i], radii[i]
        minor = major * aspects[i]
        reach = int(np.ceil(major * (2.0 if look.teardrop else 1.4))) + 1
        x0, x1 = max(0, int(cx) - reach), min(width, int(cx) + reach + 1)
        y0, y1 = max(0, int(cy) - reach), min(height, int(cy) + reach + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        tilt = 0.0 if look.teardrop else tilts[i]  # teardrops hang straight down
        cos, sin = np.cos(tilt), np.sin(tilt)
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        radius = _drop_radius(u, v, major, minor, look, phases[i])
        # The drop refracts (and flips) a wider patch of the scene; a slightly larger
        # region than the drop is remapped so the soft edge blends into drop content.
        inside = radius <= 1.15
        box = (slice(y0, y1), slice(x0, x1))
        zoom = zooms[i]
        map_x[box] = np.where(inside, cx + offsets[i, 0] - dx * zoom, map_x[box])
        map_y[box] = np.where(inside, cy + offsets[i, 1] - dy * zoom, map_y[box])
        alpha[box] = np.maximum(alpha[box], np.where(radius <= 1.0, opacities[i], 0.0))
        ring = np.exp(-(((radius - 0.92) / 0.06) ** 2)) * rims[i]
        rim[box] = np.maximum(rim[box], ring.astype(np.float32))

    # The camera is focused on the scene, far behind the glass: everything on the
    # glass, the drops' silhouettes, the views inside them and their rims, is blurred
    # by the same lens defocus. The blurred silhouette is the drop's coverage, so drop
    # edges (and whole drops smaller than the blur) let the sharp scene show through.
    defocused = cv2.GaussianBlur(image, (0, 0), look.scene_blur)
    refracted = cv2.remap(defocused, map_x, map_y, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT) * (look.exposure * look.tint)
    lens = look.lens_blur
    drops = cv2.GaussianBlur(refracted * alpha[..., None], (0, 0), lens)
    alpha = cv2.GaussianBlur(alpha, (0, 0), lens)[..., None]
    rim = cv2.GaussianBlur(rim, (0, 0), lens)[..., None]
    # Below one 8-bit level the blur's tails are no drop: the scene stays exact there.
    clear = alpha < 1 / 255
    alpha, drops, rim = (np.where(clear, 0.0, x).astype(np.float32) for x in (alpha, drops, rim))
    dropped = image * (1.0 - alpha) + drops
    if look.teardrop:
        return dropped * (1.0 - rim)  # a dark rim: light bent away at the drop's edge
    return dropped + rim * (1.0 - dropped)


# ------------------------------------------------------------------------ snow
@dataclass(frozen=True)
class FlakeLayer:
    """One depth layer of snowflakes (radius, blur and fall in pixels)."""

    density: float  # fraction of pixels holding a flake centre at severity 1
    radius: int  # flake radius (0: a single pixel)
    blur_sigma: float  # defocus of the layer
    opacity: float  # peak opacity of a flake
    fall: float  # motion-blur length of the flake's fall during the exposure


@dataclass(frozen=True)
class SnowLook:
    """One image's snow: a veil and flake layers (far to near)."""

    veil: float
    layers: tuple[FlakeLayer, ...]
    fall_angle: float  # degrees from vertical
    tint: np.ndarray  # colour of the flakes and the veil
    stars: bool  # heldout: six-armed star flakes instead of discs


def _draw_snow(rng: np.random.Generator, style: str) -> SnowLook:
    ranges = _RANGES[style]
    count = _integer(rng, ranges, "flake_layers")
    low, high = ranges["flake_radius"]
    radii = np.sort(rng.integers(int(low), int(high) + 1, size=count))
    blurs = np.sort(rng.uniform(*ranges["flake_blur"], size=count))
    densities = np.exp(rng.uniform(*ranges["flake_log_density"], size=count))
    # Near layers (large flakes) are sparse: a flake of radius r covers ~r^2 pixels.
    densities = densities / (1.0 + radii.astype(float)) ** 2
    opacities = rng.uniform(*ranges["flake_opacity"], size=count)
    falls = rng.uniform(*ranges["flake_fall"], size=count)
    layers = tuple(FlakeLayer(float(d), int(r), float(b), float(o), float(f))
                   for d, r, b, o, f in zip(densities, radii, blurs, opacities, falls,
                                            strict=True))
    tint = np.clip(rng.uniform(0.88, 1.0) * _tint(rng, ranges), 0.0, 1.0)
    return SnowLook(_uniform(rng, ranges, "snow_veil"), layers, float(rng.uniform(-30, 30)),
                    tint.astype(np.float32), stars=style == "heldout")


def _flake_shape(radius: int, star: bool) -> np.ndarray:
    """A flake's footprint (uint8 0/1): a disc, or three crossed bars (a six-armed star)."""
    size = 2 * radius + 1
    if not star or radius < 2:
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    shape = np.zeros((size, size), np.uint8)
    for angle in (0.0, 60.0, 120.0):
        dx, dy = radius * np.sin(np.deg2rad(angle)), radius * np.cos(np.deg2rad(angle))
        cv2.line(shape, (round(radius - dx), round(radius - dy)),
                 (round(radius + dx), round(radius + dy)), 1, 1)
    return shape


def _snow(image: np.ndarray, look: SnowLook, streams: np.random.SeedSequence,
          severity: float) -> np.ndarray:
    layer_rngs = _generators(streams, len(look.layers))
    height, width = image.shape[:2]

    veil = look.veil * min(severity, 2.0)
    snowy = image * (1.0 - veil) + 0.9 * veil * look.tint
    for layer, rng in zip(look.layers, layer_rngs, strict=True):
        centres = rng.random((height, width), dtype=np.float32)
        brightness = rng.uniform(0.6, 1.0, size=(height, width)).astype(np.float32)
        points = np.where(centres < layer.density * severity, brightness, 0.0)
        shape = _flake_shape(layer.radius, look.stars)
        flakes = cv2.dilate(points.astype(np.float32), shape)
        if layer.fall >= 1.5:  # the flake moves during the exposure: a fainter streak
            fall = _line_kernel(layer.fall, look.fall_angle)
            flakes = cv2.filter2D(flakes, -1, fall / fall.sum(), borderType=cv2.BORDER_REFLECT)
        flakes = cv2.GaussianBlur(flakes, (0, 0), layer.blur_sigma)
        peak = _blurred_peak(shape.astype(np.float32), layer.blur_sigma)
        coverage = (np.clip(flakes / peak, 0.0, 1.0) * layer.opacity)[..., None]
        snowy = snowy * (1.0 - coverage) + look.tint * coverage
    return snowy


_RENDERERS: dict[str, tuple[Callable, Callable]] = {
    "rain": (_draw_rain, _rain),
    "raindrop": (_draw_raindrop, _raindrop),
    "snow": (_draw_snow, _snow),
}
