"""One masking function for secrets in URLs, wherever a URL can carry one (light: no imports).

A URL carries secrets in its user info (``scheme://user:password@host``; the password may hold a
raw ``@`` or percent-escapes) and in query parameters (``?password=...``, ``token``, ``api_key``,
...). :func:`mask` replaces those values with ``***`` in any text, and exact occurrences of
``secrets`` given to it (a password quoted back by a driver's error) as whole words only:
nothing else in the text changes.
"""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import unquote

MASK = "***"
#: query parameters whose values are secrets
SECRET_PARAMS = ("password", "passwd", "pwd", "pass", "secret", "token", "access_token", "auth_token", "api_key", "apikey",
                 "sslpassword", "sslkey", "client_secret", "key")

# scheme://user:password@host  (the password runs to the last "@" before the host)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)(?P<secret>[^\s]*)@(?P<host>[^\s@/?#]*)")
_PARAMS = re.compile(r"(?P<head>[?&;](?:%s)=)(?P<secret>[^&#;\s]*)" % "|".join(map(re.escape, SECRET_PARAMS)), re.IGNORECASE)


def secrets_of(url: str) -> list[str]:
    """The secrets a URL carries (raw and percent-decoded), for masking where they are quoted."""
    found = [m.group("secret") for m in _USERINFO.finditer(url)] + [m.group("secret") for m in _PARAMS.finditer(url)]
    return [s for value in found if value for s in {value, unquote(value)}]


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's password and secret query values replaced by ``***``, and each
    of ``secrets`` where it stands as a whole word."""
    out = _USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@{m.group('host')}", text)
    out = _PARAMS.sub(lambda m: m.group("head") + (MASK if m.group("secret") else ""), out)
    for secret in sorted({s for s in secrets if s and s != MASK}, key=len, reverse=True):
        out = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, out)
    return out
