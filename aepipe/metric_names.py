"""Metric names a tracking store takes: what a plugin's hooks return is checked against them."""

from __future__ import annotations

import posixpath
import re
from typing import Any

#: the metric names a tracking store accepts (MLflow's rule: letters, digits, ``_ - . / :``
#: and spaces, and a name that is its own normal path: not ``/a``, ``a/``, ``a//b`` or ``a/../b``)
_METRIC_NAME = re.compile(r"[\w\-. /:]+")


def bad_metric_name(name: Any) -> str | None:
    """Why ``name`` cannot be a tracked metric's name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "a metric name must be a non-empty string"
    if len(name) > 250:
        return "longer than 250 characters"
    if not _METRIC_NAME.fullmatch(name):
        return "only letters, digits, spaces and _ - . / : may be used"
    normal = posixpath.normpath(name)
    if normal != name or normal == "." or normal.startswith(("..", "/")):
        return "a name read as a path must be that path ('a/b', not '/a', 'a/', 'a//b' or 'a/../b')"
    return None
