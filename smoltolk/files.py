"""Reading text files for people: bad bytes are named by file, line and byte, never a traceback."""

from __future__ import annotations

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
