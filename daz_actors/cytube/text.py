"""Chat text as a reader sees it: what CyTube's web client shows for ``chatMsg.msg``.

The server HTML-escapes every line (``&`` ``<`` ``>`` ``"`` ``'`` ``(`` ``)`` become
entities) and runs its filters, which may add tags (a link becomes ``<a href=...>``) before
it broadcasts the line. A browser shows the result as text: entities unescaped, tags
reduced to the text inside them. `reader_text` does the same, so the chat log stores what
people read and commands parse what people typed (``!tell bob you & me``); the server's
raw text is kept beside it.

Pure functions, no I/O.
"""

from __future__ import annotations

import html.parser
import re

__all__ = ["expected_echo", "reader_text"]

_CONTROL = re.compile(r"[\x00-\x1f]+")  # CyTube replaces runs of these with one space
_BLOCK_TAGS = frozenset({"br", "p", "div", "li"})  # shown as a line break: a space here


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")


def reader_text(raw: str) -> str:
    """`raw` server text as a reader sees it: tags reduced to their text, entities
    unescaped (``&lt;b&gt;a &amp; b&lt;/b&gt;`` -> ``<b>a & b</b>``)."""
    if "<" not in raw and "&" not in raw:
        return raw
    parser = _Text()
    parser.feed(raw)
    parser.close()
    return "".join(parser.parts)


def expected_echo(sent: str, limit: int) -> str:
    """The reader's text of the server's echo of a line we `sent`: control characters
    replaced, cut at the server's `limit` (filters aside)."""
    return _CONTROL.sub(" ", sent)[:limit]
