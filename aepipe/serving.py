"""The MLflow pyfunc flavour of an aepipe model, for any MLflow client or ``mlflow models serve``.

``predict(inputs, params={"mode": ...})``: ``encode`` (default; the code, the posterior mean for
stochastic encoders), ``reconstruct`` or ``sample`` (``n`` draws from the prior, inputs ignored).
Inputs are rows in the dataset's raw units (as ``aepipe encode`` takes them) unless
``scaled = true``; ``label`` gives conditional models their class (``-1``: none).

The logged model carries aepipe's model folder (weights, pipeline, meta: see
:mod:`aepipe.artifacts`) and rebuilds the model through the plugin registry when loaded, so it
needs aepipe and the run's plugins installed, but not their classes where they were.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np

from aepipe.artifacts import DEFAULT_PARAMS, DIR, load_model_dir, predict


class AepipePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = load_model_dir(Path(context.artifacts[DIR]))

    # np.ndarray hints are ones MLflow infers no schema from: the logged signature (with params)
    # stays the contract, and MLflow does not ask for hints when the model is logged
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        return predict(self.model, model_input, params)


def log_pyfunc(model_dir: Path, raw: np.ndarray, output: np.ndarray, requirements: list[str], conditional: bool) -> None:
    """Log the model in ``model_dir`` as the active run's ``pyfunc`` model; ``raw`` is an input
    example in raw units and ``output`` what ``predict`` gives for it."""
    from mlflow.models import infer_signature

    signature = infer_signature(raw, output, params=DEFAULT_PARAMS)
    mlflow.pyfunc.log_model(
        name="pyfunc",
        python_model=AepipePyfunc(),
        artifacts={DIR: str(model_dir)},
        signature=signature,
        # a conditional model's example carries its class as a param
        input_example=(raw[:3], {"label": 0}) if conditional else raw[:3],
        pip_requirements=requirements,
    )
