"""Measuring the zoo image by image: a tiny run of two built entries from the models to the
checked page, a run resuming with the entries whose records are not current, and the per-fold
mIoU of a segmenter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bioattn.config import ResultsSettings
from bioattn.evaluate.mce import CORRUPTIONS
from bioattn.results import measure
from bioattn.results.judge import UNMEASURED, eps_key
from bioattn.results.measure import fold_mious, measure_zoo, recorded_settings, weights_digest
from bioattn.results.page import check_results, records_folder, write_results
from bioattn.results.records import Record, read_records
from bioattn.zoo import find_entry


def test_a_tiny_run_from_the_models_to_the_checked_page(tmp_path):
    out = tmp_path / "docs" / "results.md"
    settings = ResultsSettings(out=str(out), only=["rvt_micro", "rvt_micro_vars_d"], images=16, corruption_images=4,
                               severities=[2], attack_images=4, eps=[1 / 255], attention_images=4, steering_images=4,
                               batch_size=8, progress=False)
    judged = write_results(settings)
    records = read_records(records_folder(out))
    rvt = records[("rvt_micro", 0)]
    assert rvt.meta["model"]["entry"] == "rvt_micro"
    assert rvt.get("clean").dtype == bool and len(rvt.images["clean"]) == 16
    # the zoo's RVT recognises the benchmark's test images
    assert rvt.get("clean").mean() >= 0.75
    assert sorted(c for c in rvt.conditions if c.startswith("corruption/")) == sorted(
        ["corruption/clean"] + [f"corruption/{c}/2" for c in CORRUPTIONS])
    key = eps_key(1 / 255)
    for condition in (f"fgsm/{key}", f"pgd/{key}", f"pgd/{key}/clean", "attention/auc", "attention/share"):
        assert rvt.get(condition).shape == (4,), condition
    assert np.array_equal(rvt.images["pgd"], records[("rvt_micro_vars_d", 0)].images["pgd"])
    by_id = {j.claim.id: j for j in judged}
    assert by_id["vars-pgd-rvt-vars-d"].primary.n == 4 and by_id["vars-attention-rvt"].primary is not None
    assert by_id["absvit-pgd"].verdict == UNMEASURED
    page = out.read_text()
    record = json.loads((find_entry("rvt_micro").folder / "train.json").read_text())
    assert f"| `rvt_micro` | {len(record['log'])} | 0.002 per 512 images |" in page
    assert "| `rvt_micro` | RVT (self-attention) |" in page
    # the verdicts on the page are the records' verdicts
    assert [j.verdict for j in check_results(settings)] == [j.verdict for j in judged]


def test_a_run_resumes_with_the_entries_whose_records_are_not_current(monkeypatch):
    entries = [find_entry("rvt_micro"), find_entry("gfnet_micro")]
    measured: list[str] = []

    def record_of(entry, settings, progress=False):
        measured.append(entry.name)
        return Record(entry.name, 0, meta={"weights_sha256": weights_digest(entry),
                                           "settings": json.loads(json.dumps(recorded_settings(entry, settings)))})

    monkeypatch.setattr(measure, "ZOO", entries)
    monkeypatch.setattr(measure, "measure_entry", record_of)
    settings = ResultsSettings(progress=False)
    stored, said = [], []
    first = measure_zoo(settings, store=stored.append, log=said.append)
    assert measured == ["rvt_micro", "gfnet_micro"] and stored == first
    assert said[0] == "measuring rvt_micro (1 of 2)" and said[-1].startswith("measured 2 entries in ")
    existing = {(r.entry, r.seed): r for r in first}
    # an interrupted run's stored records are kept: nothing is measured again
    measured.clear()
    assert measure_zoo(settings, existing={k: v for k, v in existing.items() if k[0] == "rvt_micro"}) != []
    assert measured == ["gfnet_micro"]
    measured.clear()
    assert measure_zoo(settings, existing=existing) == [] and measured == []
    # other settings, or other weights: measured again
    measure_zoo(ResultsSettings(progress=False, images=100), existing=existing)
    assert measured == ["rvt_micro", "gfnet_micro"]
    measured.clear()
    existing[("gfnet_micro", 0)].meta["weights_sha256"] = "0" * 64
    measure_zoo(settings, existing=existing)
    assert measured == ["gfnet_micro"]
    # an entry named is measured even when its record is current
    measured.clear()
    measure_zoo(settings, names=["rvt_micro"], existing=existing)
    assert measured == ["rvt_micro"]


def test_fold_miou_of_a_perfect_and_of_an_all_background_segmenter():
    class Labels(torch.utils.data.Dataset):  # the label map is written into the image
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.maps = torch.randint(0, 3, (40, 8, 8), generator=g)

        def __len__(self):
            return len(self.maps)

        def __getitem__(self, i):
            return self.maps[i][None].float().expand(3, -1, -1), self.maps[i]

    class Reader(torch.nn.Module):
        num_classes = 3

        def __init__(self, background_only=False):
            super().__init__()
            self.background_only = background_only

        def forward(self, x):
            labels = torch.zeros_like(x[:, 0]).long() if self.background_only else x[:, 0].long()
            return torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()

    assert fold_mious(Reader(), Labels(), images=40, folds=4, batch_size=3) == [100.0] * 4
    background = fold_mious(Reader(background_only=True), Labels(), images=30, folds=3)
    # background's IoU is its pixel share in the fold, the other two classes score 0
    shares = [100 * float((Labels().maps[i * 10:(i + 1) * 10] == 0).float().mean()) for i in range(3)]
    assert background == pytest.approx([s / 3 for s in shares])


def test_a_glimpse_model_is_attacked_at_every_aimed_glimpse_over_the_sweep_and_on_its_clean_path():
    from bioattn.results.measure import measure_classifier, takes_fixations

    settings = ResultsSettings(images=4, corruption_images=2, severities=[2], attack_images=4, eps=[1 / 255],
                               attention_images=2, glimpses=8, attack_readout=4, batch_size=4, progress=False)
    record = measure_classifier(find_entry("rsrnn_micro"), settings)
    judged = eps_key(1 / 255)
    for g in (1, 2, 4, 8):  # glimpse 16 is past the 8 run
        assert record.get(f"pgd_aimed/{g}/{judged}").shape == (4,)
        assert record.get(f"pgd_aimed/{g}/{judged}/glimpse").shape == (8, 4)
    assert not record.has(f"pgd_aimed/16/{judged}")
    for eps in (2 / 255, 4 / 255, 8 / 255):  # the sweep beyond the settings' eps
        assert record.get(f"pgd/{eps_key(eps)}/glimpse").shape == (8, 4)
    frozen = record.get(f"pgd_frozen/{judged}/glimpse")
    assert frozen.shape == (8, 4) and frozen.dtype == bool
    assert np.array_equal(record.get(f"pgd_frozen/{judged}"), frozen[3])
    assert takes_fixations(torch.nn.Identity()) is False


def test_a_glimpse_model_held_to_its_own_scan_path_computes_what_it_did():
    from bioattn.models import create_model
    from bioattn.results.measure import takes_fixations

    torch.manual_seed(0)
    model = create_model("rsrnn_micro", num_classes=5).eval()
    assert takes_fixations(model)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        free = model.forward_glimpses(x, glimpses=6)
        held = model.forward_glimpses(x, fixations=free.fixations)
    torch.testing.assert_close(held.logits, free.logits)
    torch.testing.assert_close(held.fixations, free.fixations)
