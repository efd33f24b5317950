"""Text from outside (servers, datasets, run folders, file names) made safe to print on a terminal.

A model id from ``/v1/models``, an error body or a dataset row can hold escape sequences that recolour the
terminal, set its title, write hyperlinks or move the cursor over earlier output (OSC 52 can even write
the clipboard). ``clean`` removes every ANSI escape sequence (CSI, OSC, DCS/SOS/PM/APC, two-byte escapes,
and their 8-bit C1 forms) and replaces what is left of the C0/C1 control characters, DEL and the Unicode
bidirectional overrides with U+FFFD, so what a user sees is what the text holds. ``markup`` does the same
and also escapes rich markup, for text interpolated into a rich format string.
"""

from __future__ import annotations

import re
from typing import Any

# ESC-introduced sequences (7-bit) and their 8-bit C1 equivalents. Unterminated strings run to the end.
_ESCAPES = re.compile(
    r"""
    \x1b\[ [0-?]* [ -/]* [@-~]?                       # CSI ... final byte
  | \x9b [0-?]* [ -/]* [@-~]?                         # 8-bit CSI
  | (?:\x1b[\]PX^_] | [\x90\x98\x9d\x9e\x9f]) .*? (?:\x07|\x1b\\|\x9c|\Z)  # OSC, DCS, SOS, PM, APC strings
  | \x1b [ -/]* [0-~]?                                # two-byte / nF escapes (ESC c, ESC ( B, ...)
    """,
    re.VERBOSE | re.DOTALL,
)
# C0 except TAB/LF, DEL, C1; line/paragraph separators; bidi embeddings, overrides and isolates
_CONTROL_MULTI = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_ONE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SPACE_LIKE = re.compile("[\t\n\r\u2028\u2029]")
REPLACEMENT = "\ufffd"


def clean(text: Any, multiline: bool = False) -> str:
    """``text`` as a string with no escape sequences and no control characters.

    Single-line (the default): tabs, newlines and carriage returns become spaces. ``multiline=True`` keeps
    ``\\n`` and ``\\t`` (a CR becomes a newline only as part of CRLF). Any other control character becomes U+FFFD.
    """
    s = text if isinstance(text, str) else str(text)
    if s.isprintable() and "\x1b" not in s:
        return s  # the common case: nothing to do
    s = _ESCAPES.sub("", s)
    if multiline:
        s = s.replace("\r\n", "\n")
        return _CONTROL_MULTI.sub(REPLACEMENT, s)
    s = _SPACE_LIKE.sub(" ", s)
    return _CONTROL_ONE.sub(REPLACEMENT, s)


def markup(text: Any, multiline: bool = False) -> str:
    """``clean`` and then rich-markup escaped, for interpolating outside text into a rich format string."""
    from rich.markup import escape  # here, not at import: clean() serves paths that never print (run folders)

    return escape(clean(text, multiline))
