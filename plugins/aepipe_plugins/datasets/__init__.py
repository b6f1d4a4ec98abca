"""Datasets: sources of arrays and files (``sources``), of images (``images``) and generated shapes (``shapes``).

Parts only: the plugins that register them are the family modules of :mod:`aepipe_plugins.families`."""
