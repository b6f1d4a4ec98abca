"""Store errors in one line: what SQLAlchemy and MLflow raise, without their framing, with its root cause."""

from __future__ import annotations

#: lines of SQLAlchemy's messages that say nothing of the cause
_NOISE = ("(raised as a result of", "[SQL:", "[parameters:", "(Background on this error at:")


def _lines(exc: BaseException) -> list[str]:
    return [
        " ".join(line.split()) for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(_NOISE)
    ]


def error_line(exc: BaseException) -> str:
    """One line that says why ``exc`` happened: its first line that is not SQLAlchemy's framing
    ("raised as a result of Query-invoked autoflush", the SQL statement), followed by the root
    cause at the end of its chain (``raise ... from``, a DBAPI error's ``orig``) where that line
    does not already say it."""
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (
            current.__cause__ or (None if current.__suppress_context__ else current.__context__))
    top = (_lines(exc) or [type(exc).__name__])[0]
    root = chain[-1]
    cause = (_lines(root) or [""])[0]
    if root is exc or not cause or cause in top:
        return top
    module = type(root).__module__
    name = type(root).__name__ if module == "builtins" else f"{module}.{type(root).__name__}"
    return f"{top} (cause: {name}: {cause})"
