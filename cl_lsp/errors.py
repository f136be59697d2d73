"""How a failure reads in one line, for a person: the popup, the log line, the error answer."""

from __future__ import annotations

#: Longer first lines are cut: a message is a sentence, not a dump.
MAX_CHARS = 200


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (at most :data:`MAX_CHARS` characters), or the
    exception's type name when it has no message."""
    text = str(error).strip()
    return text.splitlines()[0][:MAX_CHARS] if text else type(error).__name__
