"""Fixations on the object mask: pixel lookup, per-glimpse shares, the random baseline, the suite."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bioattn.checkpoint import model_meta, save_checkpoint
from bioattn.cli import main
from bioattn.errors import BioattnError
from bioattn.evaluate.glimpses import fixation_pixels, fixations_on_mask, fixations_on_mask_dataset
from bioattn.models import create_model
from bioattn.models.glimpse import Glimpses


def test_fixation_pixels_follow_grid_sample_convention():
    # W = 4 pixels span [-1, -0.5), [-0.5, 0), [0, 0.5), [0.5, 1]
    fix = torch.tensor([[-1.0, -1.0], [-0.51, 0.0], [-0.49, 0.49], [0.0, 0.51], [1.0, 1.0]])
    rows, cols = fixation_pixels(fix, 8, 4)
    assert cols.tolist() == [0, 0, 1, 2, 3]
    assert rows.tolist() == [0, 4, 5, 6, 7]          # H = 8: y in [-1, 1] over 8 rows


def test_fixations_on_mask_per_image():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True     # top-left quarter of image 0
    masks[1, 2:, 2:] = True     # bottom-right quarter of image 1
    fix = torch.tensor([[[-0.5, -0.5], [-0.5, -0.5]],      # glimpse 1: top-left in both
                        [[0.5, 0.5], [0.5, 0.5]]])         # glimpse 2: bottom-right in both
    assert fixations_on_mask(fix, masks).tolist() == [[True, False], [False, True]]
    with pytest.raises(BioattnError, match=r"\(T, B, 2\)"):
        fixations_on_mask(fix[0], masks)
    with pytest.raises(BioattnError, match="masks must be"):
        fixations_on_mask(fix, masks[:1])


class _LeftLooker(nn.Module):
    """Fixates the image centre first, then a point in the left half."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward_glimpses(self, x, glimpses=None):
        steps = glimpses or 3
        fix = torch.tensor([-0.5, 0.1]).expand(steps, x.shape[0], 2).clone()
        fix[0] = 0.0
        return Glimpses(logits=torch.zeros(steps, x.shape[0], 2), fixations=fix,
                        sigmas=torch.ones(steps, x.shape[0]))


class _Data(torch.utils.data.Dataset):
    """Images whose object is the left half (area 1/2) or the left quarter (area 1/4)."""

    def __init__(self, n=6, size=8):
        masks = np.zeros((n, size, size), bool)
        masks[: n // 2, :, : size // 2] = True
        masks[n // 2:, :, : size // 4] = True
        self.arrays = SimpleNamespace(masks=masks)
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(3, self.size, self.size), 0


def test_shares_and_random_baseline():
    out = fixations_on_mask_dataset(_LeftLooker(), _Data(), glimpses=4, batch_size=4)
    # x = -0.5 is column 2 of 8: inside the left half, outside the left quarter (columns 0-1)
    assert out["per_glimpse"] == pytest.approx([0.0, 50.0, 50.0, 50.0])
    assert out["learned"] == pytest.approx(50.0)
    assert out["random"] == pytest.approx(100 * (0.5 + 0.25) / 2)
    assert out["ratio"] == pytest.approx(50.0 / 37.5)
    assert out["glimpses"] == 4 and out["n_images"] == 6 and out["learns_fixations"] is False
    # a limit takes images spread over the set: 0, 2 (half masks) and 5 (a quarter mask)
    limited = fixations_on_mask_dataset(_LeftLooker(), _Data(), limit=3)
    assert limited["n_images"] == 3 and limited["random"] == pytest.approx(100 * (0.5 + 0.5 + 0.25) / 3)


def test_needs_a_glimpse_model_and_masks():
    with pytest.raises(BioattnError, match="need a glimpse model"):
        fixations_on_mask_dataset(nn.Linear(2, 2), _Data())
    plain = torch.utils.data.TensorDataset(torch.zeros(2, 3, 8, 8), torch.zeros(2))
    with pytest.raises(BioattnError, match="object masks"):
        fixations_on_mask_dataset(_LeftLooker(), plain)


def test_glimpses_suite_on_embedded_data(tmp_path, capsys):
    torch.manual_seed(0)
    args = dict(img_size=32, num_classes=10)
    model = create_model("rsrnn_micro", **args)
    meta = model_meta("rsrnn_micro", args, 10, img_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    ckpt = save_checkpoint(tmp_path / "ck", model, meta)
    out = tmp_path / "g.json"
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", "embedded:size=32,train=4,val=6,test=4",
               "--suite", "clean,glimpses", "--readouts", "5", "--workers", "0", "--no-progress",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    g = json.loads(out.read_text())["results"]["glimpses"]
    # eval measures the test split unless told otherwise
    assert g["glimpses"] == 5 and len(g["per_glimpse"]) == 5 and g["n_images"] == 4
    assert g["learns_fixations"] is True
    assert all(0 <= s <= 100 for s in g["per_glimpse"]) and 0 < g["random"] < 20
