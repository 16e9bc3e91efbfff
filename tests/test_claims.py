"""The claims page: verdicts from the figures, rows for models the zoo lacks, and the page
written from the zoo's built entries."""

from __future__ import annotations

import json
import math

import pytest

from bioattn.claims import (
    FAILS,
    HOLDS,
    UNMEASURED,
    UNRESOLVED,
    binomial_se,
    claim_rows,
    claims,
    closer_to_object,
    fixates_object,
    fixates_small_objects,
    fold_mious,
    generalises_better,
    keeps_accuracy,
    more_robust,
    recovers,
    segments_better,
    steers,
    verdict,
    write_results,
)
from bioattn.cli import main
from bioattn.config import ResultsSettings
from bioattn.errors import BioattnError
from bioattn.zoo import find_entry


def _scores(**figures):
    base = dict(clean=90.0, n_clean=1000, clean_per_glimpse=None, corrupted=None, n_corrupted=None, fgsm=None,
                pgd=None, pgd_per_glimpse=None, n_attack=None, on_object=None, on_object_std=None,
                object_area=None, object_auc=None, object_auc_std=None, n_attention=None, fixations_on_object=None,
                fixations_random=None, n_fixated=None,
                steering_win_rate=None, n_pairs=None, trained_glimpses=None, miou=None, miou_folds=None,
                shape_ious=None, all_background=None, map=None, label_frequency_map=None,
                small_object_fixations=None, small_object_random=None, n_small=None)
    return base | figures


def test_verdict_needs_twice_the_standard_error():
    assert binomial_se(50.0, 100) == pytest.approx(5.0)
    assert verdict(10.1, 5.0) == HOLDS and verdict(9.9, 5.0) == UNRESOLVED
    assert verdict(-10.1, 5.0) == FAILS and verdict(0.0, math.inf) == UNRESOLVED


def test_robustness_claim_compares_the_system_with_its_baseline():
    measure = more_robust("corrupted", "n_corrupted")
    system, base = _scores(corrupted=70.0, n_corrupted=1000), _scores(corrupted=60.0, n_corrupted=1000)
    text, images, outcome = measure([system, base])
    assert outcome == HOLDS and "70.0% vs 60.0%" in text and images == "1000 per model"
    assert measure([base, system])[2] == FAILS
    # the same gap on 20 images is not enough to tell
    few = [_scores(corrupted=70.0, n_corrupted=20), _scores(corrupted=60.0, n_corrupted=20)]
    assert measure(few)[2] == UNRESOLVED
    assert measure([_scores(), base])[2] == UNMEASURED


def test_attention_and_steering_claims():
    near = _scores(on_object=40.0, on_object_std=10.0, object_area=12.0, object_auc=0.95, object_auc_std=0.05,
                   n_attention=400)
    far = _scores(on_object=30.0, on_object_std=10.0, object_area=12.0, object_auc=0.90, object_auc_std=0.05,
                  n_attention=400)
    assert closer_to_object([near, far])[2] == HOLDS and closer_to_object([far, near])[2] == FAILS
    assert steers([_scores(steering_win_rate=0.7, n_pairs=400)])[2] == HOLDS
    assert steers([_scores(steering_win_rate=0.52, n_pairs=400)])[2] == UNRESOLVED
    assert steers([_scores(steering_win_rate=0.3, n_pairs=400)])[2] == FAILS


def test_fixation_claim_against_random_points():
    assert fixates_object([_scores(fixations_on_object=40.0, fixations_random=10.0, n_fixated=300)])[2] == HOLDS
    assert fixates_object([_scores(fixations_on_object=11.0, fixations_random=10.0, n_fixated=300)])[2] == UNRESOLVED
    assert fixates_object([_scores()])[2] == UNMEASURED


def test_segmentation_claim_reads_the_spread_over_folds():
    better = _scores(miou=60.0, miou_folds=[58.0, 61.0, 60.0, 62.0, 59.0], shape_ious=[40.0, 70.0], all_background=8.0)
    worse = _scores(miou=55.0, miou_folds=[54.0, 55.0, 56.0, 56.0, 54.0], shape_ious=[35.0, 60.0], all_background=8.0)
    text, images, outcome = segments_better([better, worse])
    assert outcome == HOLDS and images == "5 folds of the test images"
    assert "mIoU 60.0% vs 55.0% (all background 8.0%); weakest shape class 40.0% vs 35.0% IoU" == text
    assert segments_better([worse, better])[2] == FAILS
    # folds that disagree leave the same mean gap unresolved
    noisy = _scores(miou=55.0, miou_folds=[40.0, 70.0, 45.0, 65.0, 55.0], shape_ious=[35.0], all_background=8.0)
    assert segments_better([better, noisy])[2] == UNRESOLVED
    assert segments_better([_scores(), worse])[2] == UNMEASURED


def test_style_claim_compares_the_mean_over_held_out_styles():
    measure = generalises_better(("a", "b"))
    system = [_scores(clean=60.0, n_clean=1000), _scores(clean=40.0, n_clean=1000)]
    base = [_scores(clean=50.0, n_clean=1000), _scores(clean=30.0, n_clean=1000)]
    text, images, outcome = measure(system + base)
    # the means are 50% vs 40%, each with a standard error of about 1.1 points
    assert outcome == HOLDS and images == "2000 per model (2 styles)"
    assert text == "mean held-out top-1 50.0% vs 40.0% (chance 10%; per style: a 60.0 vs 50.0, b 40.0 vs 30.0)"
    assert measure(base + system)[2] == FAILS
    near = [_scores(clean=41.0, n_clean=1000), _scores(clean=40.0, n_clean=1000)]
    assert measure(near + [_scores(clean=40.0, n_clean=1000)] * 2)[2] == UNRESOLVED
    assert measure([_scores(clean=None)] * 4)[2] == UNMEASURED


def test_small_object_fixation_claim():
    sure = _scores(small_object_fixations=50.0, small_object_random=5.0, n_small=300, map=80.0)
    text, images, outcome = fixates_small_objects([sure])
    assert outcome == HOLDS and images == "300 images with a small object" and "mAP 80.0%" in text
    assert fixates_small_objects([_scores(small_object_fixations=6.0, small_object_random=5.0,
                                          n_small=300)])[2] == UNRESOLVED
    assert fixates_small_objects([_scores()])[2] == UNMEASURED


def test_fold_miou_of_a_perfect_and_of_an_all_background_segmenter():
    import torch

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


def test_looking_longer_must_not_cost_accuracy():
    steady = _scores(clean_per_glimpse=[50.0, 80.0, 90.0, 95.0] + [95.0] * 12, trained_glimpses=4, n_clean=2000)
    falling = _scores(clean_per_glimpse=[50.0, 80.0, 90.0, 95.0] + [80.0] * 12, trained_glimpses=4, n_clean=2000)
    assert keeps_accuracy([steady])[2] == HOLDS and keeps_accuracy([falling])[2] == FAILS
    assert "95.0% at glimpse 4 (trained) -> 80.0% at glimpse 16" in keeps_accuracy([falling])[0]


def test_glimpse_recovery_claim_and_its_baseline_form():
    rising = _scores(pgd_per_glimpse=[60.0, 50.0, 40.0, 10.0] + [10.0 + 5 * i for i in range(12)], n_attack=300)
    flat = _scores(pgd_per_glimpse=[60.0, 50.0, 40.0, 10.0] + [11.0] * 12, n_attack=300)
    assert recovers(4, True)([rising])[2] == HOLDS and recovers(4, True)([flat])[2] == UNRESOLVED
    # a baseline's claim is that it does not recover
    assert recovers(4, False)([flat])[2] == HOLDS and recovers(4, False)([rising])[2] == FAILS
    assert "10.0% at glimpse 4 -> 65.0% at glimpse 16" in recovers(4, True)([rising])[0]


def test_every_claim_has_a_row_and_missing_models_say_how_to_build_them():
    settings = ResultsSettings()
    measured = {"rvt_micro": {"results": {"clean": {"top1": 97.0, "n": 100}}, "model": {"name": "RVT"}}}
    rows = claim_rows(settings, measured)
    assert len(rows) == len(claims(settings))
    sources = {r.source for r in rows}
    assert sources == {"AbSViT", "VARS", "RS-RNN"}
    vars_d = next(r for r in rows if r.claim == "VARS is more robust to corruptions: RVT VARS-D vs self-attention")
    assert vars_d.verdict == UNMEASURED and "bioattn zoo --only rvt_micro_vars_d" in vars_d.ours
    # every entry a claim names is in the zoo
    for claim in claims(settings):
        for name in claim.entries:
            assert find_entry(name).name == name


def test_results_page_from_the_zoo(tmp_path):
    out = tmp_path / "docs" / "results.md"
    rows = write_results(ResultsSettings(out=str(out), only=["rvt_micro"], images=64, corruption_images=4,
                                         attack_images=8, attention_images=16, steering_images=8,
                                         progress=False))
    page = out.read_text()
    assert page.count("\n| ") >= len(rows) and "| `rvt_micro` | RVT (self-attention) |" in page
    data = json.loads((tmp_path / "docs" / "results" / "results.json").read_text())
    clean = data["models"]["rvt_micro"]["results"]["clean"]
    # the zoo's RVT recognises the benchmark's test images
    assert clean["n"] == 64 and clean["top1"] >= 80.0
    assert (tmp_path / "docs" / "results" / "zoo.md").is_file()
    # the training table: the entry's recorded command and learning curve
    record = json.loads((find_entry("rvt_micro").folder / "train.json").read_text())
    curve = " ".join(f"{e['val_top1']:.0f}" for e in record["log"])
    assert f"| `rvt_micro` | {len(record['log'])} | 0.002 per 512 images |" in page and curve in page
    for link in ("results/zoo.md", "results/results.json"):
        assert f"({link})" in page


def test_results_refuses_a_page_that_is_not_markdown(tmp_path, capsys):
    assert main(["results", "--out", str(tmp_path / "results.txt"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a .md file" in err[0]
    with pytest.raises(BioattnError, match="beyond --glimpses"):
        ResultsSettings(glimpses=4, attack_readout=8)
