"""Render names that come from data (file, folder, snapshot and archive-member names) safely.

A file name may hold anything but `/` and NUL: a newline that forges a log line, an ESC that
drives the terminal, a bidi override that shows `exe.png` as `png.exe`. Every message that
carries such a name renders it with `shown()`:

    shown("cat/1.png")       -> cat/1.png                (printable: unchanged)
    shown("x\\n2026-… .png")  -> 'x\\n2026-… .png'          (else Python's repr: quoted, escaped)

`str.isprintable()` is false for every control character (C0, DEL, C1), for format characters
(bidi overrides and isolates, zero-width joiners) and for lone surrogates (undecodable bytes in
a file name), and `repr` escapes exactly those, so the output is one line of visible characters.
The quotes mark a name that was escaped: `'a\\nb'` cannot be mistaken for the printable `a\\nb`.

This module sits below every layer (it imports only the standard library).
"""

from __future__ import annotations

from os import PathLike

__all__ = ["shown", "shown_text"]


def shown(name: str | PathLike[str]) -> str:
    """`name` as is when every character is printable, else its repr (quoted, escaped)."""
    text = str(name)
    return text if text.isprintable() else repr(text)


def shown_text(text: str) -> str:
    """A free-form message (a library's error text) on one line, its unprintable characters escaped.

    Unlike `shown`, nothing is quoted: the text is prose, not a name. Runs of whitespace
    (newlines included) become one space, as messages here are one line.
    """
    flat = " ".join(text.split())
    if flat.isprintable():
        return flat
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
