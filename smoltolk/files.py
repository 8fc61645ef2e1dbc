"""Generic file helpers that data and model code share: reading text files for people (bad bytes are
named by file, line and byte, never a traceback), JSON and checksums, and atomic directory writes
(with the removal of what killed writers left)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from smoltolk.errors import CheckpointError, InputError


def decode_utf8(data: bytes, where: str | Path, bom: bool = True) -> str:
    """``data`` as UTF-8 (a leading BOM dropped when ``bom``); an InputError naming the line otherwise."""
    try:
        return data.decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{where}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         "expected UTF-8: convert the file (e.g. iconv -t UTF-8)") from None


def read_text(path: str | Path) -> str:
    """The whole file as UTF-8 text (see :func:`decode_utf8`)."""
    path = Path(path)
    return decode_utf8(path.read_bytes(), path)


def read_lines(path: str | Path) -> list[str]:
    """The file's lines (UTF-8), without line ends."""
    return read_text(path).splitlines()


SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")


def require_safetensors(directory: str | Path, what: str = "") -> None:
    """Raise a CheckpointError unless ``directory`` holds safetensors weights (a single file or an index);
    pickle-based weights (``*.bin``, ``*.pt``) are named and refused: they can run code when loaded."""
    directory = Path(directory)
    if any((directory / name).is_file() for name in SAFETENSORS):
        return
    others = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt*"))
    hint = (f" Found {others}: pickle-based weights are not loaded (they can run code); convert them to "
            "safetensors with a tool you trust." if others else "")
    raise CheckpointError(f"{directory}: no {' or '.join(SAFETENSORS)}{f' for {what}' if what else ''}.{hint}")


def check_output_file(path: str | Path, option: str) -> Path:
    """Before any work: ``path`` can be written as a file (its folder exists, it is not a folder)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file path")
    if not path.parent.is_dir():
        raise InputError(f"{option} {path}: the folder {path.parent} does not exist; create it first")
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) under a temporary name beside ``path``, then rename: never a partial file."""
    import os
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it private; an output is a normal file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected a JSON file here)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); the file may be truncated or corrupted") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    return data


@contextmanager
def atomic_directory(target: str | Path, replaceable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target`` by renames.

    If anything fails, ``target`` is left exactly as it was and the temporary directory is
    removed. An existing non-empty ``target`` is replaced only if ``replaceable(target)`` says so
    (default: never), so a save can never delete a directory it did not write.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target}: exists and is a file, not a directory")
    if target.is_dir() and any(target.iterdir()) and not (replaceable is not None and replaceable(target)):
        raise CheckpointError(f"{target}: exists and holds files this save did not write; refusing to replace "
                              "it (choose an empty or new directory)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: a later run can tell a dead writer's leftovers from a live write
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is a normal directory
    try:
        yield tmp
        for f in tmp.iterdir():  # flush file contents before the rename makes them visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_LEFTOVER = re.compile(r"^\.(.+)\.(tmp|old)-(?:(\d+)-)?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_writes(folder: str | Path) -> list[Path]:
    """Remove the temporary directories that killed atomic writes left in ``folder`` (never one whose
    writer is still running); returns what was removed. A write killed between moving the old
    directory aside and moving the new one in leaves no target: the old one is put back."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir(), key=lambda p: ".old-" not in p.name):  # restores first
        m = _LEFTOVER.match(p.name)
        if not m or not p.is_dir() or (m.group(3) and _alive(int(m.group(3)))):
            continue
        target = folder / m.group(1)
        if m.group(2) == "old" and not target.exists():  # killed between its two renames: the old one is whole
            os.replace(p, target)
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
