"""Paired folder data sets (degraded input, clean ground truth) in the public layouts.

The public adverse-weather benchmarks each name their pairs differently:

=============  =========================  ==========================================
layout         folders                    pairing
=============  =========================  ==========================================
raindrop       ``data/``, ``gt/``         ``N_rain.png`` <-> ``N_clean.png``
outdoor-rain   ``input/``, ``gt/``        ``im_0001_s80_a04.png`` <-> ``im_0001.png``
snow100k       ``synthetic/``, ``gt/``    identical file stems
stem           an input-like and a        identical file stems
               gt-like folder (below)
list           a list file                lines ``input_path gt_path``, relative to
                                          the root
=============  =========================  ==========================================

``auto`` picks the layout from the folder names (and, where two layouts share them,
from the input file names). Every pair is checked when the data set is opened, by
decoding both images: an input whose name does not fit the layout, one without its
ground truth, an unreadable image or an input/gt size mismatch is an error naming
the file, or, with ``skip_bad``, a warning naming it and the pair left out. Opening
fails rather than training or evaluating on a silently shrunken set.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpmask.data.clean import read_image
from gpmask.data.images import is_image_file
from gpmask.errors import GpmaskError

#: Folder names (case-insensitive) the ``stem`` layout accepts, in order of preference.
INPUT_FOLDER_NAMES = ("input", "inputs", "data", "synthetic", "degraded", "rain", "rainy",
                      "snow", "lq", "low", "hazy")
GT_FOLDER_NAMES = ("gt", "target", "targets", "clean", "groundtruth", "ground_truth", "hq",
                   "high", "norain", "label", "labels")


@dataclass(frozen=True)
class FolderLayout:
    """How one benchmark names its folders and pairs an input with its ground truth."""

    input_folders: tuple[str, ...]
    gt_folders: tuple[str, ...]
    gt_stem: Callable[[str], str | None]  # input file stem -> gt file stem, None: misnamed
    naming: str  # the input naming, for error messages


def _pattern_stem(pattern: str, replacement: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)

    def gt_stem(stem: str) -> str | None:
        return compiled.sub(replacement, stem) if compiled.fullmatch(stem) else None

    return gt_stem


def _same_stem(stem: str) -> str:
    return stem


FOLDER_LAYOUTS: dict[str, FolderLayout] = {
    "raindrop": FolderLayout(("data",), ("gt",), _pattern_stem(r"(.*)_rain", r"\1_clean"),
                             "N_rain.png paired with gt/N_clean.png"),
    "outdoor-rain": FolderLayout(("input",), ("gt",), _pattern_stem(r"(.*)_s\d+_a\d+", r"\1"),
                                 "im_0001_s80_a04.png paired with gt/im_0001.png"),
    "snow100k": FolderLayout(("synthetic",), ("gt",), _same_stem,
                             "the same file name in synthetic/ and gt/"),
    "stem": FolderLayout(INPUT_FOLDER_NAMES, GT_FOLDER_NAMES, _same_stem,
                         "the same file stem in the input and gt folders"),
}
#: Every layout name ``PairedFolder`` accepts.
LAYOUTS = ("auto", *FOLDER_LAYOUTS, "list")


class PairedFolder:
    """A checked list of (input, ground truth) image files under ``root``.

    ``pairs`` holds the usable pairs in a deterministic order (sorted input names, or
    the list file's order); ``load(i)`` decodes pair ``i`` to float32 RGB in [0, 1].
    Opening decodes every image once to check it (a gt shared by several inputs
    once), with a progress bar on a terminal unless ``progress`` is false; problems
    found are kept in ``skipped`` when ``skip_bad`` lets them pass.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        layout: str = "auto",
        list_file: str | os.PathLike | None = None,
        skip_bad: bool = False,
        progress: bool = True,
    ) -> None:
        self.root = Path(root)
        self.skip_bad = skip_bad
        self.skipped: list[str] = []
        if layout not in LAYOUTS:
            raise GpmaskError(f"unknown data layout {layout!r}; use one of {', '.join(LAYOUTS)}")
        if not self.root.is_dir():
            raise GpmaskError(f"data folder {self.root} does not exist")
        if list_file is not None and layout not in ("auto", "list"):
            raise GpmaskError(f"a list file pairs images itself; layout {layout!r} cannot use one")
        if layout == "list" and list_file is None:
            raise GpmaskError("layout 'list' needs a list file of 'input_path gt_path' lines")
        if list_file is not None:
            self.layout = "list"
            candidates = self._list_candidates(Path(list_file))
        else:
            self.layout = self._detect_layout() if layout == "auto" else layout
            candidates = self._folder_candidates(FOLDER_LAYOUTS[self.layout])
        self.pairs = self._check(candidates, progress)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"PairedFolder({str(self.root)!r}, layout={self.layout!r}, pairs={len(self)})"

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode pair ``index``: (input, gt), each float32 HxWx3 RGB in [0, 1]."""
        input_path, gt_path = self.pairs[index]
        degraded, clean = read_image(input_path), read_image(gt_path)
        if degraded.shape != clean.shape:
            raise GpmaskError(_size_mismatch(input_path, degraded.shape, gt_path, clean.shape))
        return degraded, clean

    # ---------------------------------------------------------------- discovery
    def _subfolder(self, names: tuple[str, ...]) -> Path | None:
        folders = {p.name.lower(): p for p in sorted(self.root.iterdir()) if p.is_dir()}
        return next((folders[name] for name in names if name in folders), None)

    def _input_files(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if is_image_file(p))

    def _detect_layout(self) -> str:
        """The first benchmark layout whose folders exist and whose naming fits an input."""
        for name in ("raindrop", "outdoor-rain", "snow100k"):
            layout = FOLDER_LAYOUTS[name]
            inputs = self._subfolder(layout.input_folders)
            if inputs is None or self._subfolder(layout.gt_folders) is None:
                continue
            if any(layout.gt_stem(p.stem) is not None for p in self._input_files(inputs)):
                return name
        stem = FOLDER_LAYOUTS["stem"]
        if self._subfolder(stem.input_folders) and self._subfolder(stem.gt_folders):
            return "stem"
        found = sorted(p.name + "/" for p in self.root.iterdir() if p.is_dir())
        raise GpmaskError(
            f"cannot tell the layout of {self.root} (folders: {', '.join(found) or 'none'}); "
            f"expected data/+gt/ (raindrop), input/+gt/ (outdoor-rain), synthetic/+gt/ "
            f"(snow100k), an input folder ({', '.join(INPUT_FOLDER_NAMES)}) beside a gt folder "
            f"({', '.join(GT_FOLDER_NAMES)}), or a list file"
        )

    def _folder_candidates(self, layout: FolderLayout) -> list[tuple[Path, Path] | str]:
        """Pairs found by file name, or for each input that cannot be paired, why."""
        inputs = self._subfolder(layout.input_folders)
        gts = self._subfolder(layout.gt_folders)
        if inputs is None or gts is None:
            missing = layout.input_folders if inputs is None else layout.gt_folders
            raise GpmaskError(
                f"{self.root} has no {'/'.join(missing)} folder for layout {self.layout!r}"
            )
        gt_by_stem: dict[str, Path] = {}
        for path in self._input_files(gts):
            gt_by_stem.setdefault(path.stem, path)
        candidates: list[tuple[Path, Path] | str] = []
        for path in self._input_files(inputs):
            stem = layout.gt_stem(path.stem)
            if stem is None:
                candidates.append(
                    f"{path}: unpaired input, its name does not fit the {self.layout} layout "
                    f"({layout.naming})"
                )
            elif stem not in gt_by_stem:
                candidates.append(f"{path}: missing ground truth {gts / stem}.* (unpaired input)")
            else:
                candidates.append((path, gt_by_stem[stem]))
        if not candidates:
            raise GpmaskError(f"data set {self.root} is empty: no input images in {inputs}")
        return candidates

    def _list_candidates(self, list_file: Path) -> list[tuple[Path, Path] | str]:
        try:
            lines = list_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise GpmaskError(f"cannot read list file {list_file}: {exc}") from exc
        candidates: list[tuple[Path, Path] | str] = []
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 2:
                raise GpmaskError(
                    f"{list_file}:{number}: expected 'input_path gt_path', got {line.strip()!r}"
                )
            input_path, gt_path = self.root / fields[0], self.root / fields[1]
            if not input_path.is_file():
                candidates.append(f"{input_path}: missing input (listed in {list_file}:{number})")
            elif not gt_path.is_file():
                candidates.append(
                    f"{gt_path}: missing ground truth for {input_path} "
                    f"(listed in {list_file}:{number})"
                )
            else:
                candidates.append((input_path, gt_path))
        if not candidates:
            raise GpmaskError(f"data set {self.root} is empty: list file {list_file} names no pair")
        return candidates

    # ---------------------------------------------------------------- checking
    def _check(
        self, candidates: list[tuple[Path, Path] | str], progress: bool
    ) -> list[tuple[Path, Path]]:
        """Decode every image once; keep the good pairs, report or raise on the rest."""
        shapes: dict[Path, tuple[int, ...]] = {}  # a gt shared by many inputs is read once

        def shape(path: Path) -> tuple[int, ...]:
            if path not in shapes:
                shapes[path] = read_image(path).shape
            return shapes[path]

        pairs = []
        for candidate in tqdm(candidates, desc=f"checking {self.root.name or self.root}",
                              unit="pair", disable=None if progress else True, leave=False):
            if isinstance(candidate, str):
                self._reject(candidate)
                continue
            input_path, gt_path = candidate
            try:
                input_shape, gt_shape = shape(input_path), shape(gt_path)
            except GpmaskError as exc:
                self._reject(str(exc))
                continue
            if input_shape != gt_shape:
                self._reject(_size_mismatch(input_path, input_shape, gt_path, gt_shape))
                continue
            pairs.append(candidate)
        if not pairs:
            raise GpmaskError(
                f"data set {self.root} is empty: all {len(candidates)} pairs were skipped"
            )
        return pairs

    def _reject(self, problem: str) -> None:
        if not self.skip_bad:
            raise GpmaskError(problem)
        self.skipped.append(problem)
        warnings.warn(f"skipping {problem}", stacklevel=4)


def _size_mismatch(input_path: Path, input_shape: tuple, gt_path: Path, gt_shape: tuple) -> str:
    return (
        f"{input_path}: size {input_shape[1]}x{input_shape[0]} differs from its ground truth "
        f"{gt_path} ({gt_shape[1]}x{gt_shape[0]})"
    )


def data_spec_paths(specs: list[str] | None) -> list[str]:
    """The paths ``--data WEATHER=DIR[:LAYOUT]`` options may name, without parsing the
    folders (for the check that no output overwrites an input): each location with and
    without its ``:LAYOUT`` suffix."""
    locations = [spec.partition("=")[2] for spec in specs or []]
    return locations + [location.rpartition(":")[0] for location in locations if ":" in location]


def parse_data_spec(
    spec: str, skip_bad: bool = False, progress: bool = True
) -> tuple[str, PairedFolder]:
    """Parse the command line's ``WEATHER=DIR[:LAYOUT]`` into (weather, data set).

    ``DIR`` may also be a list file (``WEATHER=pairs.txt``): its paths are relative
    to the folder it is in. A ``:suffix`` is read as the layout only where the whole
    text is not an existing path, so paths containing ``:`` still work. ``progress``
    shows a bar while the pairs are checked (on a terminal only).
    """
    weather, sep, location = spec.partition("=")
    weather = weather.strip()
    if not sep or not weather or not location:
        raise GpmaskError(
            f"--data {spec!r}: expected WEATHER=DIR[:LAYOUT], "
            "e.g. rain=/data/outdoor_rain:outdoor-rain"
        )
    layout = "auto"
    head, colon, tail = location.rpartition(":")
    if colon and head and not os.path.exists(location) and not re.search(r"[\\/]", tail):
        location, layout = head, tail
    path = Path(location)
    if path.is_file():
        return weather, PairedFolder(path.parent, layout, list_file=path, skip_bad=skip_bad,
                                     progress=progress)
    return weather, PairedFolder(path, layout, skip_bad=skip_bad, progress=progress)
