"""The MLflow pyfunc flavour of an aepipe model, for any MLflow client or ``mlflow models serve``.

``predict(inputs, params={"mode": ...})``: ``encode`` (default; the code, the posterior mean for
stochastic encoders), ``reconstruct`` or ``sample`` (``n`` draws from the prior, inputs ignored).
Inputs are rows in the dataset's raw units (as ``aepipe encode`` takes them) unless
``scaled = true``; ``label`` gives conditional models their class (``-1``: none).
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np

DEFAULT_PARAMS = {"mode": "encode", "scaled": False, "label": -1, "n": 10, "seed": 0}


class AepipePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import torch

        self.model = torch.load(context.artifacts["autoencoder"], map_location="cpu", weights_only=False)
        self.model.eval()

    # np.ndarray hints are ones MLflow infers no schema from: the logged signature (with params)
    # stays the contract, and MLflow does not ask for hints when the model is logged
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        import torch

        from aepipe.data import scale

        p = {**DEFAULT_PARAMS, **(params or {})}
        model = self.model
        lo, hi = model.meta["value_range"]
        label = int(p["label"])
        with torch.no_grad():
            if p["mode"] == "sample":
                torch.manual_seed(int(p["seed"]))
                n = int(p["n"])
                y = torch.full((n,), label, dtype=torch.long) if label >= 0 else (torch.arange(n) % model.spec.n_classes if model.spec.conditional else None)
                out = model.sample(n, y).numpy()
                return out if p["scaled"] else lo + out * (hi - lo)
            x = np.asarray(model_input, dtype=np.float64)
            x = x.reshape(len(x), -1)
            x = x.astype(np.float32) if p["scaled"] else scale(x, (lo, hi))
            xt = torch.as_tensor(x)
            y = torch.full((len(x),), label, dtype=torch.long) if label >= 0 else None
            if p["mode"] == "encode":
                return model.encode(xt, y).code.numpy()
            if p["mode"] == "reconstruct":
                out = model(xt, y).numpy()
                return out if p["scaled"] else lo + out * (hi - lo)
        raise ValueError(f"mode must be encode, reconstruct or sample, not {p['mode']!r}")


def log_pyfunc(model, example: np.ndarray, requirements: list[str]) -> None:
    """Log ``model`` (an AutoEncoder on the CPU) as the active run's ``pyfunc`` model."""
    import tempfile
    from pathlib import Path

    import torch
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "autoencoder.pt"
        torch.save(model, path)
        wrapper = AepipePyfunc()
        wrapper.model = model
        lo, hi = model.meta["value_range"]
        raw = lo + example.astype(np.float64) * (hi - lo)
        # a conditional model needs a class to encode: the example uses class 0
        output = wrapper.predict(None, raw, {"label": 0} if model.spec.conditional else None)
        signature = infer_signature(raw, output, params=DEFAULT_PARAMS)
        mlflow.pyfunc.log_model(
            name="pyfunc",
            python_model=AepipePyfunc(),
            artifacts={"autoencoder": str(path)},
            signature=signature,
            # a conditional model's example carries its class as a param
            input_example=(raw[:3], {"label": 0}) if model.spec.conditional else raw[:3],
            pip_requirements=requirements,
        )
