"""The use cases: what a user asks aepipe for, as plain functions that take settings and return
results. The CLI parses options, calls one of them, prints what it returns and maps errors to
exit codes; a notebook or another tool calls the same functions (``aepipe.train(...)``,
``aepipe.evaluate(...)``).

- :mod:`.train`: a pipeline trained as one run, on one process or several;
- :mod:`.tune`: a study over the pipeline's ``[tune]`` space, and its summary;
- :mod:`.arrays`: ``encode``, ``reconstruct``, ``sample`` and ``fit-sampler`` on a stored run;
- :mod:`.plugins`: the installed plugins, and their conformance check;
- :mod:`.fid`: FID and its companions between two sets of images.

The use-case layer (``tests/test_layers.py``'s ``LAYERS``, ``docs/architecture.md``) is wider than
this package: a use case that is the whole of one domain lives with it, where a reader looks for it
first, and this package holds those whose domain is spread over the layers below. Elsewhere in the
layer: :mod:`aepipe.evaluation.run` (``evaluate``), :mod:`aepipe.evaluation.report` (``report``),
:mod:`aepipe.evaluation.reference` (the reference rows), :mod:`aepipe.compare` (``compare``),
:mod:`aepipe.zoo` (``zoo``), :mod:`aepipe.ui` (``ui``), :mod:`aepipe.template` (``new-plugin``),
:mod:`aepipe.guide` (the plugin guide's tables), :mod:`aepipe.testing` (the plugin authors' test
helpers), :mod:`aepipe.conformance` (the conformance suite they run) and :mod:`aepipe.plugin`
(the plugin API, whose names load on first use). Every use case
the package root offers (``aepipe.train``, ``aepipe.evaluate``...) is named
in its ``_LAZY`` table.
"""
