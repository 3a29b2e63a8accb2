"""Text from the chat server as PostgreSQL can store it.

A CyTube frame is JSON, and JSON may carry ``"\\ud800"``: a lone UTF-16 surrogate, which
Python keeps in a `str` but which is not Unicode text. PostgreSQL ``text`` and ``jsonb``
refuse it (as they refuse NUL), and so does UTF-8. Such characters are replaced by U+FFFD
(the replacement character) before anything is stored; see docs/chat-log.md.
"""

from __future__ import annotations

import re

__all__ = ["REPLACEMENT", "storable_text", "unstorable"]

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates


def unstorable(text: str) -> bool:
    """Whether `text` holds a character PostgreSQL text cannot (NUL, a lone surrogate)."""
    return _UNSTORABLE.search(text) is not None


def storable_text(text: str) -> str:
    """`text` with NUL characters and lone surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)
