"""The one definition of an id: what ingest stores, what pseudonyms hash, what forget and explain look up.

An id is the field's text without leading and trailing ASCII whitespace: space, tab, line feed,
vertical tab, form feed and carriage return (Java's ``\\s``, which Spark's regular expressions use).
Nothing else is removed: U+00A0 (no-break space), U+0085, U+2028 and the other Unicode spaces are
part of an id, so ``"bob\\u00a0"`` and ``"bob"`` are two users everywhere. Text fields other than ids
are trimmed by the same rule.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from profiling.exceptions import ConfigError

ID_WHITESPACE = " \t\n\x0b\x0c\r"
_EDGES = r"^[ \t\n\x0B\f\r]+|[ \t\n\x0B\f\r]+$"  # ID_WHITESPACE as a Java character class


def normalise_id(value: str) -> str:
    """An id as the tables hold it (before any pseudonymisation)."""
    return value.strip(ID_WHITESPACE)


def normalised(column: Column | str) -> Column:
    """The same rule as :func:`normalise_id`, for a Spark column."""
    return F.regexp_replace(F.col(column) if isinstance(column, str) else column, _EDGES, "")


def read_id_lines(text: str) -> list[str]:
    """Ids of a users file: one per line, lines ended by ``\\n`` or ``\\r\\n`` only; blank lines skipped.

    ``str.splitlines`` would also break at U+0085, U+2028 and U+001C-U+001E, which may be part of an id.
    """
    return [normalise_id(line) for line in text.split("\n") if normalise_id(line)]


def read_id_file(path: Path) -> list[str]:
    """Ids of a users file (UTF-8, a leading byte-order mark dropped) by :func:`read_id_lines`; read as
    bytes, as text mode also ends lines at ``\\r``."""
    try:
        return read_id_lines(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"users file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
