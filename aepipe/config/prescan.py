"""Bounds on what is read: the size and nesting limits of a pipeline, and the pre-scan that
measures how deep TOML text nests before any parser sees it."""

from __future__ import annotations

import re
from typing import Any

from aepipe.errors import ConfigError

#: A pipeline file, or one ``--set`` argument, larger than this is refused before it is parsed
#: (1 MiB; the shipped pipelines are under 2 KB).
MAX_FILE_BYTES = 1 << 20
#: The deepest a pipeline may nest: the parts of a table's name (``[a.b]``: 2; ``[[a.b]]``: 3,
#: the array counts), of a dotted key (``a.b.c = 1``: 3) and the arrays and inline tables around
#: a value, counted together along any path (the shipped pipelines reach 6). Checked on the text,
#: before ``tomllib`` reads it: deeper input is one error line, never a deep recursion.
MAX_DEPTH = 64

# The tokens of TOML that nesting depends on, but strings (see :func:`_string_end`); a comment
# is one token, so that a bracket, a dot or a ``#`` inside one counts for nothing. Each repeat is
# of one character class with nothing after it that could fail: linear, nothing to backtrack.
# No possessive repeats or atomic groups: CPython before 3.11.5 (Debian 12's 3.11.2) mis-matches
# them, and ``requires-python`` is 3.11.
_TOKEN = re.compile(r'''
     (?P<space>[ \t\r]+)
    |(?P<newline>\n)
    |(?P<comment>\#[^\n]*)
    |(?P<punct>[\[\]{}=,.])
    |(?P<word>[^\s"'\#\[\]{}=,.]+)
''', re.VERBOSE)
# A value's run of characters that change nothing: in an array (commas and newlines included),
# at the top level (to the end of the line), in an inline table (to the next comma).
_SKIP = {"[": re.compile(r"""[^"'\#\[\]{}]+"""), None: re.compile(r"""[^"'\#\[\]{}\n]+"""),
         "{": re.compile(r"""[^"'\#\[\]{},\n]+""")}
# The characters that end a run inside each kind of string (a closing quote, an escape, the end
# of a one-line string's line).
_STRING_RUN = {'"""': re.compile(r'[^"\\]*'), "'''": re.compile(r"[^']*"),
               '"': re.compile(r'[^"\\\n]*'), "'": re.compile(r"[^'\n]*")}


_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.DOTALL)
_ESCAPED = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", "e": "\x1b", '"': '"', "\\": "\\"}


def _unescape(match: re.Match) -> str:
    code = match.group(1) or match.group(2)
    if code is None:
        return _ESCAPED.get(match.group(3), match.group())
    return chr(int(code, 16)) if int(code, 16) <= 0x10FFFF else match.group()


def _key_name(text: str, start: int, stop: int) -> str:
    """The name a key's part ``text[start:stop]`` (bare, or a one-line string) stands for."""
    if text[start] == "'":
        return text[start + 1:stop - 1]
    if text[start] == '"':
        return _ESCAPE.sub(_unescape, text[start + 1:stop - 1])
    return text[start:stop]


def _string_end(text: str, pos: int) -> int:
    """Where the TOML string that starts at ``text[pos]`` (a quote) ends, as TOML reads it: a
    multi-line one (``\"\"\"`` or ``'''``) at its closing delimiter (with up to two more quotes
    of its kind, which belong to it), a one-line one at its closing quote; a backslash escapes
    the next character in basic strings. An unterminated string runs to the end of its line (or
    of the text, for a multi-line one): tomllib then reports it. One pass, no backtracking."""
    quote, end = text[pos], len(text)
    multi = text.startswith(quote * 3, pos)
    opener = quote * 3 if multi else quote
    run = _STRING_RUN[opener]
    p = pos + len(opener)
    while True:
        p = run.match(text, p).end()
        if p >= end:
            return end
        ch = text[p]
        if ch == "\\":  # basic strings only (the runs of literal strings stop at quotes alone)
            if p + 1 >= end or (not multi and text[p + 1] == "\n"):
                return p + 1 if p + 1 >= end else p  # a one-line string ends at its line
            p += 2
        elif ch == "\n":  # a one-line string that is not closed
            return p
        elif not multi:
            return p + 1
        elif text.startswith(opener, p):
            p += 3
            for _ in range(2):  # ''''' : two quotes inside, then the delimiter
                if p < end and text[p] == quote:
                    p += 1
            return p
        else:
            p += 1  # one or two quotes inside a multi-line string


def _too_deep(where: str, line: int) -> ConfigError:
    return ConfigError(
        f"{where}: line {line}: nested more than {MAX_DEPTH} levels deep (table names, dotted keys, arrays "
        f"and inline tables counted together); aepipe reads at most {MAX_DEPTH}"
    )


def check_nesting(text: str, where: str, base: int = 0) -> int:
    """How deep TOML ``text`` nests (as :func:`tree_depth` counts the tree it holds; an empty
    array counts one level more), ``base`` levels above it already; deeper than
    :data:`MAX_DEPTH` is refused. One pass over its tokens, before any parser sees it: strings
    and comments count for nothing, and the text need not be valid TOML (the parser reports that)."""
    stack: list[tuple[str, int]] = []  # the open arrays and inline tables: "[" or "{", depth inside
    mode, line, pos, end = "start", 1, 0, len(text)  # mode: start (of a line), header, key, value
    table = depth = key_base = base  # depth of the current [table]; of the value being read; of a key's first part
    dots, aot = 0, False  # dots of the key or table name being read; whether it names an array of tables

    deepest = base
    # the arrays of tables declared so far ([[a.b]]), as a tree of their names' parts: a header
    # under one ([a.b.c]) is an array's level deeper than its parts count. Node: [is an array, parts]
    tables: list[Any] = [False, {}]
    node, arrays, part = tables, 0, ""

    def deeper(levels: int) -> int:
        nonlocal deepest
        if levels > MAX_DEPTH:
            raise _too_deep(where, line)
        deepest = max(deepest, levels)
        return levels

    while pos < end:
        if mode == "value":  # a value's characters that change nothing, in one step
            skipped = _SKIP[stack[-1][0] if stack else None].match(text, pos)
            if skipped:
                line += skipped.group().count("\n")
                pos = skipped.end()
                if pos >= end:
                    break
        start = pos
        if text[pos] in "\"'":
            stop = _string_end(text, pos)
            kind, value = "string", text[pos]
            line += text.count("\n", pos, stop)
            pos = stop
        else:
            token = _TOKEN.match(text, pos)
            kind, value = token.lastgroup, token.group()
            pos = token.end()
        if kind in ("space", "comment"):
            continue
        if kind == "newline":
            line += 1
            if not stack:  # the end of a top-level line (an array may span lines)
                mode, depth = "start", table
            continue
        if mode == "start":
            if value == "[":
                mode, dots, aot = "header", 0, text.startswith("[", pos)
                pos += aot
                node, arrays, part = tables, 0, ""
            else:
                mode, key_base, dots = ("key" if kind in ("word", "string") else "value"), table, 0
        elif mode == "header":
            if kind in ("word", "string"):
                part = _key_name(text, start, pos)
            elif value == ".":  # a part of the name: one level, two where an array of tables holds it
                node = node[1].setdefault(part, [False, {}]) if aot else (node[1].get(part) if node else None)
                arrays += bool(node and node[0])
                dots += 1
                deeper(base + dots + 1 + aot + arrays)
            elif value == "]":
                table = depth = deeper(base + dots + 1 + aot + arrays)
                if aot:
                    node[1].setdefault(part, [False, {}])[0] = True
                pos += aot and text.startswith("]", pos)
                mode = "value"  # the rest of the line: a comment, or an error tomllib reports
        elif mode == "key":
            if value == ".":
                dots += 1
                deeper(key_base + dots + 1)
            elif value == "=":
                depth, mode = deeper(key_base + dots + 1), "value"
            elif value == "}" and stack:  # an empty inline table
                stack.pop()
                depth, mode = (stack[-1][1] if stack else table), "value"
        elif kind != "punct":
            continue
        elif value == "[":
            depth = deeper(depth + 1)
            stack.append(("[", depth))
        elif value == "{":  # its keys add the levels
            stack.append(("{", depth))
            mode, key_base, dots = "key", depth, 0
        elif value in "]}":
            if stack:
                stack.pop()
            depth = stack[-1][1] if stack else table
        elif value == "," and stack:
            depth = stack[-1][1]
            if stack[-1][0] == "{":
                mode, key_base, dots = "key", depth, 0
    return deepest
