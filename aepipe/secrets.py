"""One masking function for secrets in URLs, wherever a URL can carry one (light: imports only
the standard library).

A URL carries secrets in its user info (``scheme://user:password@host``; the password may hold a
raw ``@`` or percent-escapes) and in query parameters (``?password=...``, ``token``, ``api_key``,
...). :func:`mask` replaces those values with ``***`` in any text, and exact occurrences of
``secrets`` given to it (a password quoted back by a driver's error) as whole words only:
nothing else in the text changes.

The secrets of the URLs a command works with (``MLFLOW_TRACKING_URI``, ``AEPIPE_STORAGE``,
``--storage``, MLflow's password and token variables) are remembered (:func:`remember`) and
masked everywhere the command writes: its errors and warnings, and, once :func:`install` has run,
every log record of every library and any traceback.

A URL whose user info parsers read differently (a raw ``@``, ``:``, ``/``, ``?``, ``#`` or space
in the password: SQLAlchemy ends the password at the first ``@``, Python's ``urllib`` at the
last, a driver then names the rest as the host it cannot resolve) is refused up front by
:func:`check_url` with one line that shows no part of it: no masking can know which fragment
a library will echo. :func:`excerpt` quotes a file's contents in an error: short and masked.
"""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import unquote

MASK = "***"
#: query parameters whose values are secrets
SECRET_PARAMS = ("password", "passwd", "pwd", "pass", "secret", "token", "access_token", "auth_token", "api_key",
                 "apikey", "sslpassword", "sslkey", "client_secret", "key")

# scheme://user:password@host  (the password runs to the last "@" before the host)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)(?P<secret>[^\s]*)@(?P<host>[^\s@/?#]*)")
_PARAMS = re.compile(
    r"(?P<head>[?&;](?:%s)=)(?P<secret>[^&#;\s]*)" % "|".join(map(re.escape, SECRET_PARAMS)), re.IGNORECASE
)


#: what a URL's user name and password may hold raw (RFC 3986's unreserved characters, sub-delims
#: and percent-escapes): every parser reads such user info alike
_USERINFO_SAFE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def ambiguous(url: str) -> bool:
    """Whether parsers may disagree on the user name and password of ``url``: its user info
    (up to the ``@`` before the host) holds a character that must be percent-encoded, so that
    the first ``@`` of the URL (SQLAlchemy's reading) and the last ``@`` before the path
    (RFC 3986's) do not both end it, or more than one ``:``."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme) or "@" not in rest:
        return False
    before_at = rest[:rest.index("@")]
    netloc = re.match(r"[^/?#]*", rest).group()
    if "@" not in netloc:  # an "@" in the path or query; SQLAlchemy still reads "host:x/y@" as a password
        return bool(netloc) and ":" in before_at
    userinfo = netloc.rpartition("@")[0]
    return userinfo != before_at or userinfo.count(":") > 1 or not all(
        _USERINFO_SAFE.fullmatch(part) for part in userinfo.split(":"))


def check_url(url: str | None, where: str) -> None:
    """Refuse ``url`` (given as ``where``: an option or a variable) if :func:`ambiguous`, in one
    line that shows only its scheme: any other part may be a piece of the password."""
    if url and ambiguous(url):
        from aepipe.errors import ConfigError

        raise ConfigError(
            f"{where}: the user name or password of this {url.partition('://')[0]}:// URL holds a character that URL "
            "parsers read differently (@ : / ? # [ ] %, a space); percent-encode it (@ as %40, : as %3A, / as %2F, % "
            "as %25, e.g. urllib.parse.quote(password, safe='')); the URL is not shown"
        )


def check_environment() -> None:
    """:func:`check_url` on every URL variable this process was started with."""
    import os

    for name in URL_VARIABLES:
        check_url(os.environ.get(name), name)


def secrets_of(url: str) -> list[str]:
    """The secrets a URL carries (raw and percent-decoded), for masking where they are quoted."""
    found = [m.group("secret") for m in _USERINFO.finditer(url)] + [m.group("secret") for m in _PARAMS.finditer(url)]
    return [s for value in found if value for s in {value, unquote(value)}]


#: secrets remembered by this process (see :func:`remember`)
_KNOWN: set[str] = set()
URL_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AEPIPE_STORAGE")
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_CLIENT_CERT_PATH")


def remember(url: str | None = None, secret: str | None = None) -> None:
    """Mask the secrets of ``url`` (and ``secret`` itself) in everything :func:`mask` sees from now on."""
    if url:
        _KNOWN.update(secrets_of(url))
    if secret:
        _KNOWN.add(secret)


def remember_environment() -> None:
    """Remember the secrets of the URLs and password variables this process was started with."""
    import os

    for name in URL_VARIABLES:
        remember(url=os.environ.get(name))
    for name in SECRET_VARIABLES:
        remember(secret=os.environ.get(name))


def mask(text: str, secrets: Iterable[str] = (), remembered: bool = True) -> str:
    """``text`` with every URL's password and secret query values replaced by ``***``, and each
    of ``secrets`` (and of those remembered, unless ``remembered`` is false: structured data
    such as a run's settings, where a password that is also a setting's value must not clobber
    it) where it stands as a whole word."""
    out = _USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@{m.group('host')}", text)
    out = _PARAMS.sub(lambda m: m.group("head") + (MASK if m.group("secret") else ""), out)
    for secret in sorted(
        {s for s in (*secrets, *(_KNOWN if remembered else ())) if s and s != MASK}, key=len, reverse=True
    ):
        out = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, out)
    return out


#: assignments in a file's text (``KEY=value``, ``key: value``): the value is masked in an excerpt
_ASSIGNMENT = re.compile(r"(?P<head>[A-Za-z_][\w.\-]*\s*[=:]\s*)(?P<value>\S.*)")


def excerpt(text: str | bytes, width: int = 16) -> str:
    """A short, masked quote of a file's contents for an error message: URL secrets and
    remembered secrets masked (:func:`mask`), the value of an assignment (``KEY=secret``,
    ``key: secret``) replaced by ``***``, at most ``width`` characters (then ``...``), quoted as
    ``repr`` quotes it (``bytes`` as ``b'...'``), control characters escaped."""
    raw = isinstance(text, bytes)
    shown = _ASSIGNMENT.sub(lambda m: m.group("head") + MASK, mask(text.decode("latin-1") if raw else text))
    cut = shown[:width]
    return repr(cut.encode("latin-1") if raw else cut) + ("..." if len(shown) > width else "")


def install() -> None:
    """Mask every log record (of any library) and any uncaught traceback of this process."""
    import logging
    import sys
    import traceback

    if getattr(logging.getLogRecordFactory(), "_aepipe_masks", False):
        return
    make = logging.getLogRecordFactory()

    def record(*args, **kwargs):
        rec = make(*args, **kwargs)
        try:
            message = rec.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report
            return rec
        masked = mask(message)
        if masked != message:
            rec.msg, rec.args = masked, None
        return rec

    record._aepipe_masks = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record)

    def hook(kind, value, tb):
        sys.stderr.write(mask("".join(traceback.format_exception(kind, value, tb))))

    sys.excepthook = hook
