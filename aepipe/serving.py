"""The MLflow pyfunc flavour of an aepipe model, for any MLflow client or ``mlflow models serve``.

``predict(inputs, params={"mode": ...})``: ``encode`` (default; the code, the posterior mean for
stochastic encoders), ``reconstruct`` or ``sample`` (``n`` draws from the prior, inputs ignored).
Inputs are rows in the dataset's raw units (as ``aepipe encode`` takes them) unless
``scaled = true``; ``label`` gives conditional models their class (``-1``: none).

A request is checked as ``aepipe encode`` checks its file (numbers, finite, rows of the model's
width: :mod:`aepipe.arrays`) and its params before any work; rows in and samples out are bounded
by ``AEPIPE_SERVE_MAX_ROWS`` (:data:`DEFAULT_MAX_ROWS`), read when the model loads. A refused
request is a :class:`RequestError`: MLflow's scoring server answers it with HTTP 400 and a
one-line JSON error; a failure of the model itself is logged on the server and answered with
HTTP 500 and one line, never a traceback. Answers hold finite numbers only (valid JSON).

The logged model carries aepipe's model folder (weights, pipeline, meta: see
:mod:`aepipe.artifacts`) and rebuilds the model through the plugin registry when loaded, so it
needs aepipe and the run's plugins installed, but not their classes where they were.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from aepipe.arrays import check_rows, check_width
from aepipe.artifacts import DEFAULT_PARAMS, DIR, load_model_dir, predict
from aepipe.errors import AepipeError, ConfigError, DataError

#: the setting that bounds a request's rows and ``sample``'s ``n``
MAX_ROWS_ENV = "AEPIPE_SERVE_MAX_ROWS"
DEFAULT_MAX_ROWS = 1000
MODES = ("encode", "reconstruct", "sample")

_log = logging.getLogger(__name__)


class RequestError(MlflowException):
    """A refused request (``INVALID_PARAMETER_VALUE``: HTTP 400) or a failed one (500), told in
    one line. MLflow's scoring server rewrites the ``message`` of an exception a model raises to
    echo the request's data before it (over several lines, ``pyfunc/scoring_server``'s
    ``invocations``); this message keeps the line it was given."""

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        self.__dict__.setdefault("_line", value)  # the first (MlflowException.__init__) stays


def max_rows() -> int:
    """``AEPIPE_SERVE_MAX_ROWS``: the most rows a request may hold and ``sample`` may draw."""
    text = os.environ.get(MAX_ROWS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_ROWS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_ROWS_ENV}={text!r}: expected a whole number of rows >= 1 (default {DEFAULT_MAX_ROWS})")
    return value


def _cut(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _shown_value(value: Any) -> str:
    return _cut(repr(value))


def _whole(params: dict[str, Any], key: str, low: int, high: int, why: str) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"params.{key}: {_shown_value(value)} is not a whole number")
    if not low <= int(value) <= high:
        raise DataError(f"params.{key}: {int(value)} is out of range; {why}")
    return int(value)


def check_params(model: Any, params: dict[str, Any] | None, limit: int) -> dict[str, Any]:
    """``params`` over :data:`DEFAULT_PARAMS`, each one aepipe knows checked against ``model``;
    others go on to :func:`aepipe.artifacts.predict` as they are."""
    if params is not None and not isinstance(params, dict):
        raise DataError(f"params: expected an object of settings, got {type(params).__name__}")
    p = {**DEFAULT_PARAMS, **(params or {})}
    if p["mode"] not in MODES:
        raise DataError(f"params.mode: {_shown_value(p['mode'])} is not one of {', '.join(MODES)}")
    if not isinstance(p["scaled"], (bool, np.bool_)):
        raise DataError(f"params.scaled: {_shown_value(p['scaled'])} is not true or false")
    _whole(p, "seed", 0, 2**63 - 1, "seeds are 0 .. 2**63 - 1")
    if p["mode"] == "sample":
        _whole(p, "n", 1, limit, f"this server draws 1 .. {limit} samples a request ({MAX_ROWS_ENV})")
    label = _whole(p, "label", -1, 2**63 - 1, "labels are -1 (none) or a class 0, 1, ...")
    classes = model.spec.n_classes
    takes_label = model.spec.conditional or bool(getattr(model.prior, "class_conditional", False))
    if takes_label and label >= classes:
        raise DataError(f"params.label: {label} is not a class of this model (0..{classes - 1}, or -1 for none)")
    offers = model.offers() if hasattr(model, "offers") else None
    if p["mode"] == "encode" and offers is not None and p.get("what", offers[0]) not in offers:
        raise DataError(f"params.what: {_shown_value(p['what'])} is not one of {', '.join(offers)} (what this model's "
                        "bottleneck offers)")
    if label < 0 and model.spec.conditional and p["mode"] != "sample":
        raise DataError(f"params.label: this model is conditional; give each request's class (0..{classes - 1})")
    return p


def check_inputs(model: Any, model_input: Any, limit: int) -> np.ndarray:
    """The request's rows as float64, checked as ``aepipe encode`` checks its input file."""
    if model_input is None:
        raise DataError("inputs: none given; encode and reconstruct take rows of numbers")
    if isinstance(model_input, dict):
        raise DataError(f"inputs: named inputs ({_cut(', '.join(map(str, model_input)))}); give one array of rows")
    if hasattr(model_input, "to_numpy"):  # a pandas DataFrame (dataframe_split, dataframe_records, CSV)
        model_input = model_input.to_numpy()
    try:
        raw = np.asarray(model_input)
    except ValueError:
        raise DataError("inputs: rows of different lengths; give one row of numbers per example") from None
    if raw.ndim > 1 and len(raw) > limit:
        raise DataError(f"inputs: {len(raw)} rows; this server takes at most {limit} a request ({MAX_ROWS_ENV})")
    raw = check_rows(raw, "inputs")
    check_width(raw, model.meta["input_dim"], "inputs", "this model")
    return raw


class AepipePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.max_rows = max_rows()  # a bad setting stops the server as it starts
        self.model = load_model_dir(Path(context.artifacts[DIR]))

    # np.ndarray hints are ones MLflow infers no schema from: the logged signature (params and
    # outputs; no input schema, see log_pyfunc) stays the contract
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        limit = getattr(self, "max_rows", DEFAULT_MAX_ROWS)
        try:
            p = check_params(self.model, params, limit)
            x = None if p["mode"] == "sample" else check_inputs(self.model, model_input, limit)
            out = np.asarray(predict(self.model, x, p))
            if out.dtype.kind == "f" and not np.isfinite(out).all():
                raise DataError("the model's output holds NaN or infinite values for these inputs "
                                "(values far outside the range it was trained on?)")
            return out
        except AepipeError as exc:
            raise RequestError(str(exc).splitlines()[0], error_code=INVALID_PARAMETER_VALUE) from None
        except Exception:  # noqa: BLE001 - told on the server; the client gets one line, no traceback
            _log.exception("aepipe model: predict failed")
            raise RequestError(
                "the model failed on this request; the server's log tells why", error_code=INTERNAL_ERROR
            ) from None


def log_pyfunc(
    model_dir: Path, raw: np.ndarray, output: np.ndarray, requirements: list[str], conditional: bool
) -> None:
    """Log the model in ``model_dir`` as the active run's ``pyfunc`` model; ``raw`` is an input
    example in raw units and ``output`` what ``predict`` gives for it."""
    from mlflow.models import ModelSignature, infer_signature

    inferred = infer_signature(raw, output, params=DEFAULT_PARAMS)
    # no input schema: MLflow would enforce it before predict and answer a bad shape with the
    # request's data over several lines; AepipePyfunc.predict checks inputs itself, in one line
    signature = ModelSignature(inputs=None, outputs=inferred.outputs, params=inferred.params)
    mlflow.pyfunc.log_model(
        name="pyfunc",
        python_model=AepipePyfunc(),
        artifacts={DIR: str(model_dir)},
        signature=signature,
        # a conditional model's example carries its class as a param
        input_example=(raw[:3], {"label": 0}) if conditional else raw[:3],
        pip_requirements=requirements,
    )
