"""Computing the ``activations`` dataset's cache once: windows of the token stream through the
model in batches on the device, written row by row into a float16 ``.npy`` memory map (memory
flat in the number of tokens), then renamed into place with its record."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from aepipe.plugin import DataError

from aepipe_plugins.datasets import transformer_sites as sites


def write_cache(config, folder: Path, key: dict, rows_path: Path, ids_path: Path, meta_path: Path) -> None:
    import torch

    from aepipe_plugins.datasets.activations import progress, select_device, token_stream

    device = select_device(config.device)
    tokenizer, model = sites.load_transformer(folder, device)
    stream, digest = token_stream(tokenizer, config.text, config.max_tokens)
    if digest != key["text"]:
        raise DataError(f"dataset 'activations': data.text = {config.text} changed while it was read")
    c = config.context
    windows = [stream[i: i + c] for i in range(0, len(stream), c)]
    width = key["width"]
    try:
        rows_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"dataset 'activations': cannot create the cache folder {rows_path.parent} ({exc})") from None
    tmp = rows_path.with_name(f"{rows_path.stem}.{os.getpid()}.tmp.npy")
    tmp_ids = ids_path.with_name(f"{ids_path.stem}.{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(stream), width))
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id or 0
    squared, peak, at, started = 0.0, 0.0, 0, time.perf_counter()
    update, close = progress(len(windows))
    try:
        with torch.inference_mode(), sites.at_site(model, config.layer, config.site) as seen:
            for b in range(0, len(windows), config.batch_size):
                group = windows[b: b + config.batch_size]
                lengths = [len(w) for w in group]
                ids = torch.full((len(group), max(lengths) + 2), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for i, w in enumerate(group):
                    ids[i, 0], ids[i, 1: len(w) + 1], ids[i, len(w) + 1] = (cls, torch.from_numpy(w.astype(np.int64)),
                                                                            sep)
                    mask[i, : len(w) + 2] = 1
                seen.clear()
                model(input_ids=ids.to(device), attention_mask=mask.to(device))
                acts = seen[0].float()
                keep = torch.zeros_like(mask, dtype=torch.bool)
                for i, n in enumerate(lengths):
                    keep[i, 1: n + 1] = True  # the text's tokens: no [CLS], [SEP] or padding
                rows = acts[keep.to(device)]
                squared += float(rows.pow(2).sum(1).double().sum())
                peak = max(peak, float(rows.abs().max()))
                out[at: at + len(rows)] = rows.cpu().numpy().astype(np.float16)
                at += len(rows)
                update(b + len(group))
    finally:
        close()
    seconds = time.perf_counter() - started
    out.flush()
    del out
    np.save(tmp_ids, stream)
    if peak > float(np.finfo(np.float16).max):
        raise DataError(f"dataset 'activations': activations up to {peak:.3g} do not fit float16")
    meta = {**key, "model": str(folder), "rows": int(at), "windows": len(windows),
            "mean_squared_norm": squared / max(at, 1),
            "max_abs": peak, "seconds": seconds, "device": str(device),
            "sha256": sites.file_digest(tmp), "ids_sha256": sites.file_digest(tmp_ids)}
    os.replace(tmp, rows_path)
    os.replace(tmp_ids, ids_path)
    tmp_meta = meta_path.with_name(f"{meta_path.stem}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, meta_path)  # last: a record means the arrays are complete
