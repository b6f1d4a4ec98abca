"""The ``aepipe`` command line (click): it parses options, calls one use case, prints what it returns
and maps errors to exit codes. Heavy packages are imported inside commands only.

- :mod:`.group`: the command group, the plugins' commands, errors in one line;
- :mod:`.runs`: ``train``, ``tune``;
- :mod:`.arrays`: ``encode``, ``reconstruct``, ``sample``, ``fit-sampler``;
- :mod:`.judging`: ``evaluate``, ``fid``, ``calibrate``;
- :mod:`.comparing`: ``compare``, ``report``, ``zoo``;
- :mod:`.plugins`: ``plugins``, ``new-plugin``;
- :mod:`.ui`: ``ui``;
- :mod:`.main`: the program (``aepipe = aepipe.cli:main``), and :mod:`.exit`: how its process ends.
"""

from __future__ import annotations

from aepipe.cli import arrays, comparing, judging, plugins, runs, ui  # noqa: F401 - each registers its commands
from aepipe.cli.group import cli
from aepipe.cli.main import main

__all__ = ["cli", "main"]
