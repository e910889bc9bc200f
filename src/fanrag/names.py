"""Names are data. A POSIX file name is bytes, not text: Python holds one as a ``str`` in which every byte
that is not valid UTF-8 is a lone surrogate (U+DC80..U+DCFF, PEP 383), and a name may hold newlines,
terminal escapes or any other control character. So fanrag keeps two forms of a name apart:

    lossless   where a name identifies something: a source URI percent-encodes the file system's bytes
               (``ids.source_uri``; ``ids.path_of`` gives the very same path back)
    shown      wherever a person or a line-oriented tool reads it (summary lines, errors, JSON, stored
               reasons): one printable line, nothing hidden

    shown(text)         an undecodable byte as \\xff, a control character as \\n, \\t, \\x1b, a line
                        separator or bidi override as \\u2028, another lone surrogate as \\ud800; all else
                        as it is. Idempotent, and a backslash stays a backslash: it is for reading, and
                        the URI is what is exact.
    storable(text)      what any UTF-8 store (SQLite, PostgreSQL, tantivy) accepts: each lone surrogate
                        escaped as ``shown`` writes it, nothing else touched (line breaks stay)
    storable_json(text) the same for JSON text, which stays valid JSON
    one_line(message, path)  an error message as one shown line that names ``path``, even when the
                        path itself holds a newline
"""

from __future__ import annotations

import json
import re

# Control characters (C0, DEL, C1), line/paragraph separators, bidi embeddings/overrides/isolates, surrogates.
_UNSHOWN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (JSON's ``\\ud800``; an undecodable file name's byte)."""
    return _SURROGATE.search(text) is not None


def shown(text: str) -> str:
    """``text`` as one printable line (see the module docstring)."""
    return _UNSHOWN.sub(lambda m: _escape(m.group()), text) if _UNSHOWN.search(text) else text


def storable(text: str) -> str:
    """``text`` with each lone surrogate escaped: a string every UTF-8 store and encoder accepts."""
    return _SURROGATE.sub(lambda m: _escape(m.group()), text) if _SURROGATE.search(text) else text


def storable_json(text: str) -> str:
    """JSON text written with ``ensure_ascii=False``, its raw lone surrogates escaped (as JSON strings of
    their ``shown`` form), so that it stays valid JSON that PostgreSQL's jsonb and SQLite both accept. A
    raw surrogate can only stand inside a string literal, never inside an escape, so this is exact."""
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: json.dumps(_escape(m.group()))[1:-1], text)


def one_line(message: str, path: str) -> str:
    """``message`` as one shown line that names ``path``. The path is escaped before the message is cut
    at its first line break (what follows is detail or a traceback), so a newline in a file's name
    neither splits the line nor loses the reason."""
    text = message.strip()
    if path:
        text = text.replace(path, shown(path))
    text = shown(text.splitlines()[0].strip()) if text else ""
    name = shown(path)
    if not path or name in text:
        return text
    return f"{name}: {text}" if text else name
