"""The demo pipeline end to end on its quick budget, and its report page."""

from __future__ import annotations

import dataclasses
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import torch
from safetensors.torch import save_file

from bioattn.cli import main
from bioattn.demo import DEMO_MODELS, DOMAIN_MODELS, HEATMAP, QUICK, domain_findings, findings, run_demo
from bioattn.demo.training import zoo_folder


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables += 1
        for key in ("src", "href"):
            if attrs.get(key):
                self.refs.append(attrs[key])


def test_quick_demo_trains_evaluates_and_writes_a_consistent_report(tmp_path):
    out = tmp_path / "report"
    summary = run_demo(out, quick=True, progress=False)
    labels = [m["model"]["name"] for m in summary["models"]]
    assert labels == [label for label, _, _ in DEMO_MODELS]
    for m in summary["models"]:
        res = m["results"]
        assert 0.0 <= res["clean"]["top1"] <= 100.0
        assert res["corruptions"]["mean_top1"] is not None
        assert res["pgd"]["runs"] and res["fgsm"]["runs"]
        assert 0.0 <= res["attention"]["mask_share"] <= 100.0
    by_label = {m["model"]["name"]: m["results"] for m in summary["models"]}
    steering = by_label["AbSViT"]["steering"]
    assert steering["ci_low"] <= steering["mean"] <= steering["ci_high"] and len(steering["score"]) == 8
    assert steering["protocol"]["chosen_on"].startswith("validation pairs")
    assert len(by_label["RS-RNN"]["glimpses"]["per_glimpse_top1"]) >= 16
    assert len(by_label["RS-RNN"]["pgd"]["runs"][0]["per_readout_top1"]) == 4
    # the domain-generalisation table: every listed model, every held-out style
    domains = summary["domains"]
    assert [r["label"] for r in domains["rows"]] == list(DOMAIN_MODELS)
    assert domains["test_domains"] == ["photo", "cartoon", "sketch", "painting"]
    for row in domains["rows"]:
        assert set(row["top1"]) == set(domains["test_domains"]) and 0.0 <= row["mean_top1"] <= 100.0

    for name in ("index.html", "report.md", "results.json"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["quick"] is True
    page = (out / "index.html").read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.tables >= 1
    # findings first, then the heat map; the long tables behind a link
    assert page.index("Findings") < page.index(HEATMAP) < page.index("<details>")
    assert page.index("<details>") < page.index("Domain generalisation") and "Across styles" in page
    assert page.count("<li>") >= 4 and "AbSViT" in page.split("</ul>")[0]
    images = [r for r in parser.refs if r.endswith((".png", ".gif"))]
    assert any("attack_readouts" in r for r in images) and any("corruptions" in r for r in images)
    assert any("absvit-pair" in r for r in images) and any("rs-rnn" in r for r in images)
    for ref in parser.refs:
        assert not ref.startswith(("http:", "https:", "//")), ref
        assert (out / ref).is_file(), f"index.html references a missing file: {ref}"

    # a second run reuses the cached checkpoints: nothing is trained again
    again = run_demo(tmp_path / "again", quick=True, progress=False, models=["FF-CNN"])
    assert again["timings"]["FF-CNN"]["train_s"] == 0.0

    # a cached checkpoint that no longer fits the model (other model code) is trained again
    cached = list(Path(os.environ["BIOATTN_CACHE"]).glob("demo/*/*/best/model.safetensors"))
    ffcnn = [p for p in cached if "ff" in p.parent.parent.name]
    assert len(ffcnn) == 1
    save_file({"not_a_weight": torch.zeros(1)}, str(ffcnn[0]))
    third = run_demo(tmp_path / "third", quick=True, progress=False, models=["FF-CNN"])
    assert third["timings"]["FF-CNN"]["train_s"] > 0.0
    assert third["models"][0]["results"]["clean"]["top1"] == again["models"][0]["results"]["clean"]["top1"]


def test_demo_evaluates_the_zoo_weights_instead_of_training(tmp_path):
    """With the zoo's weights a demo model is not trained: its checkpoint is the zoo entry (also
    the starting point of its fine-tuning across styles), and it recognises the test images."""
    settings = dataclasses.replace(QUICK, use_zoo=True)
    summary = run_demo(tmp_path / "report", progress=False, models=["RVT", "FF-CNN"], settings=settings)
    assert summary["weights"] == {"RVT": "zoo", "FF-CNN": "zoo" if zoo_folder("ffcnn_micro", {}) else "demo"}
    assert summary["timings"]["RVT"]["train_s"] == 0.0
    rvt = next(m for m in summary["models"] if m["model"]["name"] == "RVT")
    assert rvt["model"]["weights"] == "zoo"
    # trained for 3 epochs on 128 images the quick demo's models stay near chance; the zoo's do not
    assert rvt["results"]["clean"]["top1"] >= 70.0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "From the model zoo (RVT" in page
    # the trainer still runs once: RVT from scratch on the demo's data, beside the zoo's
    trainer = summary["trainer"]
    assert trainer["label"] == "RVT" and trainer["train_s"] > 0
    assert trainer["zoo_top1"] == rvt["results"]["clean"]["top1"]
    assert "The trainer at work: RVT trained here from scratch" in page
    # the domain table: the zoo's leave-one-style-out RVTs, each on the style it never saw
    domains = summary["domains"]
    assert domains["weights"] == "zoo" and [r["label"] for r in domains["rows"]] == ["RVT"]
    (row,) = domains["rows"]
    assert row["entries"] == {s: f"rvt_micro_without_{s}" for s in ("photo", "cartoon", "sketch", "painting")}
    assert row["mean_top1"] > 25.0  # chance is 10%; the zoo's models measure 59.7% on 1000 images a style
    assert "of the zoo's leave-one-style-out models" in page
    # retrain: every model trained by the demo, nothing from the zoo
    again = run_demo(tmp_path / "again", progress=False, models=["RVT"], settings=settings, retrain=True)
    assert again["weights"] == {"RVT": "demo"} and again["timings"]["RVT"]["train_s"] > 0.0
    assert again["trainer"] is None
    assert again["domains"]["weights"] == "demo"


def test_demo_takes_the_zoo_segmenters_and_multilabel_models(tmp_path):
    """With the zoo, the segmenters and multi-label models are the zoo's (nothing fine-tuned
    here), and they do their task on the quick demo's test images."""
    from bioattn.demo.training import zoo_task_folder

    settings = dataclasses.replace(QUICK, use_zoo=True)
    summary = run_demo(tmp_path / "report", progress=False, models=["ViT", "RS-RNN"], settings=settings)
    segmenter = summary["segmentation"]["models"]["ViT"]
    assert zoo_task_folder("segmentation", "vit_micro_patch8_64", {}) is not None
    assert segmenter["weights"] == "zoo" and segmenter["train_s"] == 0.0
    assert segmenter["results"]["clean"]["miou"] > 2 * summary["segmentation"]["all_background"]
    for label in ("ViT", "RS-RNN"):
        model = summary["multilabel"]["models"][label]
        assert model["weights"] == "zoo" and model["train_s"] == 0.0
        assert model["results"]["clean"]["map"] > model["results"]["clean"]["label_frequency_map"] + 20
    report = (tmp_path / "report" / "report.md").read_text()
    assert "the zoo's models, fine-tuned from the zoo's classifiers" in report


def test_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["demo", "--quick", "--out", str(blocker / "report"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out must be a path whose parent is a directory")


def test_unknown_demo_model_is_refused(tmp_path, capsys):
    assert main(["demo", "--quick", "--models", "nothing", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "no demo model matches nothing" in capsys.readouterr().err


def _model(name, clean, corrupted, pgd, n=100, **more):
    results = {"clean": {"top1": clean, "n": n},
               "corruptions": {"mean_top1": corrupted, "corruption_top1": {"fog": corrupted}, "n": n},
               "pgd": {"runs": [{"top1": pgd, "n": n}]}}
    results.update(more)
    return {"model": {"name": name}, "results": results}


def test_findings_follow_the_numbers():
    steering = {"prompted_share": 0.4, "other_share": 0.1, "mean": 0.3, "ci_low": 0.25, "ci_high": 0.35,
                "fraction_positive": 0.9, "n_images": 200, "prior_scale": 3.0, "threshold": 0.7,
                "protocol": {"chosen_on": "validation pairs"}}
    results = [
        _model("ViT", 80.0, 50.0, 10.0, attention={"mask_share": 20.0, "mask_share_chance": 10.0}),
        _model("AbSViT", 80.0, 60.0, 30.0, steering=steering,
               attention={"mask_share": 40.0, "mask_share_chance": 10.0}),
        _model("RS-RNN", 70.0, 40.0, 30.0,
               glimpses={"per_glimpse_top1": [30.0, 50.0, 70.0], "trained_glimpses": 2}),
        _model("FF-CNN", 72.0, 41.0, 30.5),
    ]
    text = " ".join(findings(results))
    assert "AbSViT is more robust than ViT" in text
    assert "RS-RNN is about as robust as FF-CNN" in text
    assert "AbSViT looks at the object most (4.0x chance), ViT least (2.0x chance)" in text
    assert "Steering moves AbSViT's top-down map toward the prompted object: image score +0.300 (95% " \
           "interval +0.250 to +0.350" in text and "chosen on validation pairs" in text
    assert "Looking longer helps RS-RNN" in text
    assert "trained with 2 glimpses, its clean top-1 is 50.0% after 2 and 70.0% after 3" in text
    # the same sentences turn when the numbers do
    results[1] = _model("AbSViT", 80.0, 30.0, 5.0, steering=dict(steering, mean=0.01, ci_low=-0.02))
    results[2]["results"]["glimpses"]["per_glimpse_top1"] = [70.0, 50.0, 30.0]
    results[3] = _model("FF-CNN", 72.0, 41.0, 10.0)
    text = " ".join(findings(results))
    assert "AbSViT is less robust than ViT" in text
    assert "RS-RNN against FF-CNN: about as robust under corruptions, more robust under attack" in text
    assert "Steering of AbSViT's top-down map is not detectable in this run" in text
    assert "Looking longer hurts RS-RNN" in text


def test_a_folder_of_other_files_is_not_used_for_the_report(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "index.html").mkdir()  # a report file name taken by a folder
    (folder / "notes.txt").write_text("keep")
    assert main(["demo", "--quick", "--out", str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("keep")
    assert main(["demo", "--quick", "--out", str(other), "--no-progress"]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]


def test_domain_findings_name_the_best_and_hardest():
    domains = {"test_domains": ["photo", "sketch"], "rows": [
        {"label": "ViT", "top1": {"photo": 30.0, "sketch": 10.0}, "mean_top1": 20.0},
        {"label": "GFNet", "top1": {"photo": 50.0, "sketch": 20.0}, "mean_top1": 35.0}]}
    (sentence,) = domain_findings(domains)
    assert "GFNet transfers best (mean top-1 35.0%), ViT worst (20.0%)" in sentence
    assert "the hardest style to reach is sketch (mean over models 15.0%)" in sentence
    assert domain_findings(None) == []


def test_findings_say_when_a_pair_is_not_like_for_like():
    zoo, demo = _model("AbSViT", 80, 60, 30), _model("ViT", 50, 40, 20)
    zoo["model"]["weights"] = "zoo"
    text = " ".join(findings([zoo, demo]))
    assert "Not like for like: AbSViT's weights come from the zoo, ViT's from the demo." in text
    demo["model"]["weights"] = "zoo"
    assert "Not like for like" not in " ".join(findings([zoo, demo]))
