"""The one id rule for users files: lines end at \\n or \\r\\n, nothing else; ASCII whitespace trimmed."""

from __future__ import annotations

import pytest

from profiling.exceptions import ConfigError
from profiling.ids import read_id_file, read_id_lines

# CRLF and LF line ends, blank and whitespace-only lines, and Unicode characters that str.splitlines()
# or str.strip() would take as line ends or spaces but that are part of an id.
TEXT = "u1\r\n\r\n  u2 \t\n \r\nan\u2028id\r\nalice\u0085carol\nbob\u00a0\nx\u001cy\n"
IDS = ["u1", "u2", "an\u2028id", "alice\u0085carol", "bob\u00a0", "x\u001cy"]


def test_id_lines_end_at_newlines_only():
    assert read_id_lines(TEXT) == IDS


def test_a_users_file_is_read_as_utf8_bytes_by_the_same_rule(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_bytes(TEXT.encode() + b"lone\rcarriage-return\n")
    assert read_id_file(path) == [*IDS, "lone\rcarriage-return"]


def test_a_users_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_bytes(b"u1\n\xff\xfeu2\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_id_file(path)
