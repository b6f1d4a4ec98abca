"""The plugins: one module per family, each registered as an entry point of the ``aepipe`` group under
the family's name. A family module registers its presets (variants, built from :mod:`aepipe_plugins.families.presets`)
and the parts it brings, which live by kind (``networks/``, ``bottlenecks/``, ``priors/``, ``regularizers/``,
``corruptions/``, ``samplers/``, ``datasets/``, ``features/``)."""
