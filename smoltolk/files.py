"""Reading text files for people: bad bytes are named by file, line and byte, never a traceback."""

from __future__ import annotations

from pathlib import Path

from smoltolk.errors import InputError


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
