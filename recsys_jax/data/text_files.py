"""Opening and checking users' source files: decompression by suffix, UTF-8 (a spreadsheet's
BOM accepted), and the numbers every reader parses — each failure a DataError naming the file
and line, with what to do."""

from __future__ import annotations

import contextlib
import gzip
import lzma
import math
from collections.abc import Callable
from pathlib import Path

from recsys_jax.data.schema import DataError

_OPENERS: dict[str, Callable] = {".gz": gzip.open, ".xz": lzma.open}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# CSV delimiter -> (its name, how to make this reader split by it)
_DELIMITERS = {
    ",": ("comma", "give it a .csv suffix"),
    "\t": ("tab", "give it a .tsv suffix"),
    ";": ("semicolon", "re-save it comma-separated (.csv) or tab-separated (.tsv)"),
}


@contextlib.contextmanager
def open_text(path: Path, encoding="utf-8-sig"):
    """A text file, decompressed by suffix. `utf-8-sig` drops the BOM spreadsheets put first;
    bytes that are not UTF-8 and broken archives become a DataError naming the file."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give the file itself")
    opener = _OPENERS.get(path.suffix, open)
    try:
        f = opener(path, "rt", encoding=encoding)
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e})") from None
    with f:
        try:
            yield f
        except UnicodeDecodeError:
            raise _not_utf8(path, opener) from None
        except (gzip.BadGzipFile, lzma.LZMAError, EOFError) as e:
            raise DataError(
                f"{path}: not a readable {path.suffix} archive ({e}); check the file is "
                "complete, or drop the suffix if it is not compressed"
            ) from None


def _not_utf8(path: Path, opener: Callable) -> DataError:
    """The error for a file that does not decode: found again in binary (the text layer
    decodes in chunks, so its error carries no line number)."""
    where, offset = f"{path}: not UTF-8 text", 0
    with opener(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                where = (
                    f"{path}:{line_no}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte "
                    f"offset {offset + e.start})"
                )
                break
            offset += len(raw)
    magic = b""
    if opener is open:  # a compressed file's own bytes are not text anyway
        with open(path, "rb") as f:
            magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        hint = "the file is gzip-compressed: give it a .gz suffix or decompress it"
    elif magic.startswith(b"\xfd7zXZ\x00"):
        hint = "the file is xz-compressed: give it a .xz suffix or decompress it"
    elif magic.startswith((b"\xff\xfe", b"\xfe\xff")):
        hint = "the file is UTF-16 text: re-save it as UTF-8"
    else:
        hint = "re-save it as UTF-8 (a spreadsheet's 'CSV UTF-8' format)"
    return DataError(f"{where}; {hint}")


def parse_timestamp(value, where: str) -> int:
    """An int64 timestamp from text or a JSON number (`1700000000`, `1.7e9`)."""
    number = value
    if isinstance(value, str):
        try:
            number = int(value)  # exact: float() would round timestamps beyond 2**53
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise DataError(f"{where}: timestamp {value!r} is not a number") from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise DataError(f"{where}: timestamp {value!r} is not a number")
    if isinstance(number, float):
        number = int(number) if math.isfinite(number) else None
    if number is None or not _INT64_MIN <= number <= _INT64_MAX:
        raise DataError(
            f"{where}: timestamp {value!r} is not a finite 64-bit number; write seconds "
            "since 1970 (or any increasing integer)"
        )
    return number


def parse_rating(value, where: str) -> float:
    """A finite rating from text or a JSON number; NaN would make every mean over the ratings
    NaN."""
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: empty rating; give every row a rating")
    try:
        if isinstance(value, bool):
            raise TypeError(value)
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: rating {value!r} is not a number") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: rating {value!r} is not a finite number; give every row one")
    return number


def delimiter_hint(header_line: str, delimiter: str, required: tuple[str, ...]) -> str:
    """When another delimiter would find the required columns, say which one and what to do."""
    for other, (name, fix) in _DELIMITERS.items():
        names = [h.strip().strip('"') for h in header_line.split(other)]
        if other != delimiter and all(r in names for r in required):
            return f"; the file seems to be {name}-separated: {fix}"
    return ""
