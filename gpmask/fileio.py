"""Writing outputs safely: atomic files and folders, and the one rule for replacing them.

gpmask writes only what the user named as output, never half of it, and never what
it was given as input. The rule, applied here for every verb:

- a file output is written beside its target and renamed onto it when complete; it may
  replace an existing regular file, never a folder;
- an output's parent folder must exist: the output is created, never folders above it;
- a folder output (a bundle, the demo's folder, run's image folder) is built beside its
  target and renamed into place when complete. An existing target is replaced only
  with ``--force`` (or where the verb says so), and only when it is an empty folder or a
  folder gpmask itself wrote (the caller says how to recognise one: a bundle's
  manifest, the demo's report, or the :data:`MARKER` file listing what gpmask wrote,
  which a folder must hold nothing beside). Anything else, a file or a folder of the
  user's, is refused by name and left as it is. The old folder is moved aside under a
  new name of its own, never a fixed one a user's file might have;
- an output that stops before it is complete (a failure, Ctrl-C, SIGTERM) never replaces
  the old one: its temporary file or folder is deleted, or, where the verb keeps work
  done (``run``), renamed to :func:`partial_name` (``out.partial.avi``) when that name is
  free;
- no output may be one of the command's inputs (the same file after resolving links),
  a folder holding one, or an existing file inside an input folder
  (:func:`check_outputs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from gpmask.errors import GpmaskError

#: Says whether an existing, non-empty folder is one the caller's verb wrote itself.
FolderRecogniser = Callable[[Path], bool]
#: The file gpmask writes into a folder output that has no record of its own (run's
#: images), naming what wrote it and every file it wrote there.
MARKER = "gpmask-output.json"

log = logging.getLogger("gpmask")


def _parent(target: Path) -> Path:
    return target.parent if str(target.parent) else Path(".")


def temporary_file_beside(target: str | os.PathLike, suffix: str = "") -> Path:
    """A new empty file (mode 0644) in ``target``'s folder, to be renamed onto ``target``.

    Beside the target so that the final ``os.replace`` is a rename on one file system.
    A folder that is missing or cannot be written to (``/proc``, ``/sys``, a read-only
    mount) is a :class:`GpmaskError` naming the target.
    """
    target = Path(target)
    folder = _parent(target)
    if not folder.is_dir():
        raise GpmaskError(f"cannot write {target}: folder {folder} does not exist")
    if target.is_dir():
        raise GpmaskError(f"cannot write {target}: it is a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=folder)
    except OSError as exc:
        raise GpmaskError(f"cannot write {target}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o644)  # mkstemp makes 0600; outputs are meant to be shared
    return tmp_path


def check_file_output(target: str | os.PathLike, suffix: str = "") -> None:
    """Refuse, before any work, a file output that :func:`atomic_path` could not write
    (its folder missing or read-only, or the target a folder)."""
    temporary_file_beside(target, suffix).unlink()


def check_folder_output(target: str | os.PathLike) -> None:
    """Refuse, before any work, a folder output (one files are written into) that is an
    existing file, or whose parent folder does not exist."""
    if os.path.lexists(target) and not Path(target).is_dir():
        raise GpmaskError(f"cannot write into {target}: it is a file, not a folder")
    if not _parent(Path(target)).is_dir():
        raise GpmaskError(f"cannot write {target}: folder {_parent(Path(target))} does not "
                          f"exist")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    tmp_path = temporary_file_beside(target, suffix + ".tmp")
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise GpmaskError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def check_replaceable(
    target: str | os.PathLike, force: bool, written_by_gpmask: FolderRecogniser, what: str
) -> None:
    """Refuse to replace ``target`` unless the folder rule above allows it.

    Args:
        force: the user asked for an existing output to be replaced.
        written_by_gpmask: recognises a folder this verb (or another gpmask verb) wrote.
        what: what such a folder is called in messages (``a gpmask bundle``).
    """
    target = Path(target)
    if not os.path.lexists(target):
        return
    if not force:
        raise GpmaskError(f"{target} exists; pass --force to replace it")
    allowed = f"only {what} or an empty folder is replaced, so it was left as it is"
    if target.is_symlink() or not target.is_dir():
        kind = "a symbolic link" if target.is_symlink() else "a file"
        raise GpmaskError(f"{target} is {kind}, not a folder; {allowed}")
    entries = sorted(p.name for p in target.iterdir())
    if entries and not written_by_gpmask(target):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise GpmaskError(f"{target} is not {what} (it holds {shown}); {allowed}")


def new_folder_beside(target: str | os.PathLike) -> Path:
    """An empty temporary folder (mode 0755) beside ``target``.

    ``target``'s parent must exist, as for a file output: gpmask creates the output it
    was asked for, not folders above it (a typo in a path would otherwise leave a tree of
    new folders behind).
    """
    target = Path(target)
    parent = _parent(target)
    if not parent.is_dir():
        raise GpmaskError(f"cannot write {target}: folder {parent} does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
        tmp.chmod(0o755)  # mkdtemp makes 0700; a bundle is meant to be shared
    except OSError as exc:
        raise GpmaskError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return tmp


def install_folder(tmp: Path, target: str | os.PathLike) -> None:
    """Move the complete folder ``tmp`` onto ``target``, replacing what is there.

    The old folder is first renamed to a new, uniquely named hidden folder beside it (a
    fixed name such as ``.NAME.old`` may be a user's own), and deleted once the new one
    is in place. Should anything (Ctrl-C, SIGTERM) interrupt the two renames, the old
    folder is put back. Call :func:`check_replaceable` before building ``tmp``.
    """
    target = Path(target)
    if not os.path.lexists(target):
        os.replace(tmp, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=_parent(target)))
    try:
        os.replace(target, aside)  # rename(2) may replace an empty folder
        os.replace(tmp, target)
    except BaseException:
        if not os.path.lexists(target):
            os.replace(aside, target)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
        if os.path.lexists(aside):
            log.warning("gpmask: warning: the replaced folder %s could not be deleted whole; "
                        "it was left as %s", target, aside)


@contextlib.contextmanager
def atomic_directory(
    target: str | os.PathLike, force: bool, written_by_gpmask: FolderRecogniser, what: str
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; move it onto ``target`` on success.

    An existing ``target`` is replaced only as :func:`check_replaceable` allows, and only
    once the new folder is complete. On any exception the temporary folder is deleted,
    so an interrupted write leaves no partial output.
    """
    check_replaceable(target, force, written_by_gpmask, what)
    tmp = new_folder_beside(target)
    try:
        yield tmp
        install_folder(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_marker(folder: Path, written_by: str, names: Iterable[str]) -> None:
    """Record in ``folder`` (a folder output being built) that ``written_by`` wrote the
    files ``names`` there, so a later run may replace the folder (:func:`marked_by`)."""
    record = {"written_by": written_by, "files": sorted(names)}
    (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n")


def marked_by(written_by: str) -> FolderRecogniser:
    """Recognises a folder whose :data:`MARKER` says ``written_by`` wrote it and which holds
    nothing but the files the marker lists: a file a user added, or a folder of the user's
    files that happen to have gpmask's names, makes it the user's."""

    def recognise(folder: Path) -> bool:
        try:
            record = json.loads((folder / MARKER).read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict) or record.get("written_by") != written_by:
            return False
        listed = set(record.get("files") or []) | {MARKER}
        return all(p.name in listed and p.is_file() and not p.is_symlink()
                   for p in folder.iterdir())

    return recognise


def partial_name(target: str | os.PathLike) -> Path:
    """Where an output stopped before its end is kept: ``out.avi`` -> ``out.partial.avi``,
    ``restored`` -> ``restored.partial``; the name says the output is not whole."""
    target = Path(target)
    return target.with_name(f"{target.stem}.partial{target.suffix}")


def keep_partial(tmp: Path, target: str | os.PathLike) -> Path | None:
    """Rename the temporary output ``tmp`` (a file or folder) to :func:`partial_name` of
    ``target`` and return that path; when the name is taken (an earlier partial output,
    or anything of the user's) nothing is replaced: ``tmp`` is deleted and None returned."""
    partial = partial_name(target)
    try:
        if tmp.is_dir():
            if os.path.lexists(partial):
                raise FileExistsError(partial)
            os.rename(tmp, partial)
        else:
            os.link(tmp, partial)  # fails rather than replace an existing file
            tmp.unlink()
        return partial
    except OSError:
        (shutil.rmtree if tmp.is_dir() else Path.unlink)(tmp)
        return None


def replace_together(folder: Path, staging: Path, commit: Callable[[], None]) -> None:
    """Move every file of ``staging`` onto its namesake in ``folder``, then ``commit``.

    For outputs that are several files plus the record of them (calibration's graphs and
    weight file, then the manifest that hashes them): until ``commit`` (writing that
    record) returns, any failure or Ctrl-C puts every namesake back as it was, so the
    record never describes files that were half replaced. ``staging`` must be on
    ``folder``'s file system (inside it, say); it is removed afterwards.
    """
    backup = Path(tempfile.mkdtemp(prefix=".replaced.", dir=folder))
    touched: list[str] = []
    try:
        for staged in sorted(staging.iterdir()):
            target = folder / staged.name
            touched.append(staged.name)
            if target.exists():
                os.replace(target, backup / staged.name)
            os.replace(staged, target)
        commit()
    except BaseException:
        for name in touched:
            if (backup / name).exists():
                os.replace(backup / name, folder / name)
            elif (folder / name).exists():
                (folder / name).unlink()
        raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def check_outputs(
    outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None]
) -> None:
    """Refuse outputs that would overwrite an input, or that name one path twice.

    An output may not be an input (same file after resolving links), a folder holding
    an input, or an existing file inside an input folder (``--log bundle/manifest.json``).
    ``None`` entries (options not given) are skipped.
    """
    outs = [Path(o) for o in outputs if o is not None]
    ins = [Path(i) for i in inputs if i is not None and os.path.exists(i)]
    for index, out in enumerate(outs):
        for other in outs[index + 1:]:
            if out.resolve() == other.resolve():
                raise GpmaskError(f"{out} is named as two outputs; give each its own path")
        for source in ins:
            if os.path.exists(out) and os.path.samefile(out, source):
                raise GpmaskError(f"output {out} is the input {source}; "
                                  f"write the output elsewhere, nothing was written")
            if _inside(source, out):
                raise GpmaskError(f"output {out} would hold the input {source}; "
                                  f"write the output elsewhere, nothing was written")
            if source.is_dir() and os.path.exists(out) and _inside(out, source):
                raise GpmaskError(f"output {out} is a file of the input folder {source}; "
                                  f"write the output elsewhere, nothing was written")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large weight files need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
