"""The use cases: what a user asks aepipe for, as plain functions that take settings and return
results. The CLI parses options, calls one of them, prints what it returns and maps errors to
exit codes; a notebook or another tool calls the same functions (``aepipe.train(...)``,
``aepipe.evaluate(...)``).

- :mod:`.train`: a pipeline trained as one run, on one process or several;
- :mod:`.tune`: a study over the pipeline's ``[tune]`` space, and its summary;
- :mod:`.arrays`: ``encode``, ``reconstruct``, ``sample`` and ``fit-sampler`` on a stored run;
- :mod:`.plugins`: the installed plugins, and their conformance check;
- :mod:`.fid`: FID and its companions between two sets of images.

Elsewhere in this layer: :mod:`aepipe.evaluation.run` (``evaluate``), :mod:`aepipe.evaluation.report`
(``report``), :mod:`aepipe.compare` (``compare``), :mod:`aepipe.zoo` (``zoo``), :mod:`aepipe.ui`
(``ui``) and :mod:`aepipe.template` (``new-plugin``).
"""
