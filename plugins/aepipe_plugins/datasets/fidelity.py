"""Downstream fidelity of a dictionary trained on the ``activations`` dataset: the model's
sentence embedding (all-MiniLM-L6-v2's mean-pooled, normalised last hidden state) with the
site's activations replaced by the dictionary's reconstruction, against zero-ablating the site.

For ``windows`` windows of the cached token stream (the last ones), with e the clean embedding,
e_sae the embedding with the reconstruction spliced in at the text's tokens and e_zero with
zeros there: ``embedding_cosine`` = mean cos(e, e_sae), ``embedding_cosine_zero`` = mean cos(e,
e_zero), and ``embedding_cosine_recovered`` = (cos_sae - cos_zero) / (1 - cos_zero): 1 when the
reconstruction changes nothing downstream, 0 when it does no better than removing the site.
"""

from __future__ import annotations

import numpy as np
import torch

from aepipe_plugins.datasets import transformer_sites as sites


@torch.no_grad()
def embedding_fidelity(dictionary, dataset, value_range: tuple[float, float], windows: int) -> dict[str, float]:
    """The three figures above for ``dictionary`` (an assembled model: ``dictionary(x)`` is the
    reconstruction of rows scaled by ``value_range``) on the windows of ``dataset`` (an
    :class:`~aepipe_plugins.datasets.activations.Activations`)."""
    c = dataset.config
    _, ids, _ = dataset.cached()
    device = next(dictionary.parameters()).device
    tokenizer, model = sites.load_transformer(dataset.folder(), device)
    starts = list(range(0, len(ids), c.context))[-windows:]
    group = [np.asarray(ids[s: s + c.context], dtype=np.int64) for s in starts]
    width = max(len(w) for w in group) + 2
    batch = torch.full((len(group), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(batch)
    keep = torch.zeros_like(batch, dtype=torch.bool)
    for i, w in enumerate(group):
        batch[i, 0], batch[i, 1: len(w) + 1], batch[i, len(w) + 1] = (tokenizer.cls_token_id, torch.from_numpy(w),
                                                                      tokenizer.sep_token_id)
        mask[i, : len(w) + 2] = 1
        keep[i, 1: len(w) + 1] = True
    batch, mask, keep = batch.to(device), mask.to(device), keep.to(device)
    lo, span = float(value_range[0]), float(value_range[1] - value_range[0])
    was = dictionary.training
    dictionary.eval()

    def reconstructed(hidden: torch.Tensor) -> torch.Tensor:
        out = hidden.clone()
        x = (hidden[keep].float() - lo) / span
        out[keep] = (lo + span * dictionary(x)).to(hidden.dtype)
        return out

    def zeroed(hidden: torch.Tensor) -> torch.Tensor:
        out = hidden.clone()
        out[keep] = 0
        return out

    try:
        clean = sites.pooled(model, batch, mask)
        cosines = {}
        for name, replace in (("sae", reconstructed), ("zero", zeroed)):
            with sites.at_site(model, c.layer, c.site, replace=replace):
                cosines[name] = float((sites.pooled(model, batch, mask) * clean).sum(-1).mean())
    finally:
        dictionary.train(was)
    sae, zero = cosines["sae"], cosines["zero"]
    return {"embedding_cosine": sae, "embedding_cosine_zero": zero,
            "embedding_cosine_recovered": (sae - zero) / (1.0 - zero) if zero < 1.0 else float("nan")}
