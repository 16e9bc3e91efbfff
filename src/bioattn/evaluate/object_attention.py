"""How much of a model's attention falls on the object: its primary attention map scored
against the object masks of the embedded data (share of the map's mass inside the mask, and
AUC-Judd with the mask's pixels as positives)."""

from __future__ import annotations

import numpy as np
import torch

from ..attention.maps import saliency
from ..attention.metrics import auc_judd


@torch.no_grad()
def mask_attention_scores(model, dataset, limit: int, batch_size: int = 64) -> dict[str, float]:
    """How well a model's primary attention map finds the object: the share of the map's mass
    inside the object mask (chance: the mask's share of the image; ``mask_share_std`` its spread
    over the images) and AUC-Judd with the mask's pixels as positives, averaged over images
    (``mask_auc_std`` its spread)."""

    arrays = dataset.arrays
    n = min(limit, len(dataset))
    shares, chance, aucs = [], [], []
    model.eval()
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        x = torch.stack([dataset[i][0] for i in idx])
        masks = torch.as_tensor(np.asarray(arrays.masks[idx.start:idx.stop]))
        if masks.ndim == 4:  # two-object images: the first object is the label
            masks = masks[:, 0]
        sal = saliency(model, x, size=tuple(masks.shape[-2:])).float().clamp_min(0)
        for s, m in zip(sal, masks.bool()):
            total = s.sum().item()
            shares.append(s[m].sum().item() / total if total > 0 else float("nan"))
            chance.append(m.float().mean().item())
            aucs.append(auc_judd(s.numpy(), m.numpy()))
    return {
        "mask_share": 100.0 * float(np.nanmean(shares)),
        "mask_share_std": 100.0 * float(np.nanstd(shares)),
        "mask_share_chance": 100.0 * float(np.mean(chance)),
        "mask_auc": float(np.nanmean(aucs)),
        "mask_auc_std": float(np.nanstd(aucs)),
        "n_images": n,
    }
