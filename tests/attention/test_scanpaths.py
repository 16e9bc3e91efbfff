"""Pictures of glimpse models: PNG strip and animated GIF."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import bioattn  # noqa: F401  (registers the models)
from bioattn.attention.scanpaths import plot_glimpses
from bioattn.errors import BioattnError
from bioattn.models import create_model


def _image() -> torch.Tensor:
    torch.manual_seed(0)
    img = torch.zeros(3, 64, 64)
    img[0, 10:30, 35:55] = 2.0
    img[1, 40:60, 5:20] = 1.5
    return img + 0.2 * torch.randn(3, 64, 64)


def test_png_and_gif_for_rsrnn(tmp_path):
    model = create_model("rsrnn_micro", encoder_widths=(8, 12, 16)).train()
    paths = plot_glimpses(model, _image(), tmp_path / "rsrnn.png", glimpses=3, gif=True, map_glimpse=2,
                          class_names=[f"class {i}" for i in range(10)])
    assert [p.name for p in paths] == ["rsrnn.png", "rsrnn.gif"]
    with Image.open(paths[0]) as png:
        assert png.format == "PNG"
        assert png.width > 400 and png.height > 300
    with Image.open(paths[1]) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 3
    assert model.training  # the model's mode is restored


def test_png_for_two_crop_and_covert_models(tmp_path):
    crop_d = create_model("crop_d_micro", encoder_widths=(8, 12, 16))
    (png,) = plot_glimpses(crop_d, _image(), tmp_path / "crop_d.png", glimpses=2, mean=(0.5,), std=(0.25,))
    with Image.open(png) as im:
        assert im.format == "PNG"
    s3ta = create_model("s3ta_micro", encoder_widths=(8, 12, 16))
    # a batch of one is accepted; a .gif name puts the strip next to it as .png
    paths = plot_glimpses(s3ta, _image()[None], tmp_path / "s3ta.gif", glimpses=2, gif=True, map_glimpse=-1)
    assert [p.name for p in paths] == ["s3ta.png", "s3ta.gif"]
    with Image.open(paths[0]) as png:
        assert png.format == "PNG"
    with Image.open(paths[1]) as gif:
        assert gif.format == "GIF" and gif.n_frames == 2


def test_bad_input(tmp_path):
    model = create_model("rsrnn_micro", encoder_widths=(8, 12, 16))
    with pytest.raises(BioattnError, match=r"\(C, H, W\)"):
        plot_glimpses(model, _image()[None].expand(2, -1, -1, -1), tmp_path / "x.png")
    with pytest.raises(BioattnError, match="map_glimpse"):
        plot_glimpses(model, _image(), tmp_path / "x.png", glimpses=3, map_glimpse=4)
    with pytest.raises(BioattnError, match="glimpses"):
        plot_glimpses(model, _image(), tmp_path / "x.png", glimpses=0)
    with pytest.raises(BioattnError, match="not a glimpse model"):
        plot_glimpses(torch.nn.Linear(3, 3), _image(), tmp_path / "x.png")
    with pytest.raises(BioattnError, match="smaller than the retina"):
        plot_glimpses(model, torch.zeros(3, 16, 16), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_ffcnn_is_drawn_as_one_view_without_a_fixation_path(tmp_path, monkeypatch):
    from bioattn.attention import scanpaths

    paths = []
    real = scanpaths._draw_path
    monkeypatch.setattr(scanpaths, "_draw_path", lambda *a, **k: paths.append(1) or real(*a, **k))
    ffcnn = create_model("ffcnn_micro", encoder_widths=(8, 12, 16))
    (png,) = plot_glimpses(ffcnn, _image(), tmp_path / "ffcnn.png", glimpses=4)
    assert png.is_file() and paths == []  # no fixation path for a model that sees the whole image
    rsrnn = create_model("rsrnn_micro", encoder_widths=(8, 12, 16))
    plot_glimpses(rsrnn, _image(), tmp_path / "rsrnn.png", glimpses=4)
    assert paths  # a glimpse model's path is drawn


@pytest.mark.parametrize("name, map_glimpse", [("rsrnn_micro", 2), ("crop_d_micro", None), ("rsrnn_micro", None)])
def test_attend_glimpse_figure_keeps_legend_and_titles_apart(tmp_path, monkeypatch, name, map_glimpse):
    from bioattn.attention import plots, scanpaths
    from conftest import overlapping_text

    figures = []
    build = scanpaths._strip_figure
    monkeypatch.setattr(scanpaths, "_strip_figure", lambda *a, **k: figures.append(build(*a, **k)) or figures[-1])
    model = create_model(name, encoder_widths=(8, 12, 16)) if name == "rsrnn_micro" else create_model(name)
    image = tmp_path / "image.png"
    Image.fromarray((_image().clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(image)
    if map_glimpse is None:
        plots.attend(model, image, tmp_path / "attend.png", glimpses=6,
                     meta={"classes": [f"class {i}" for i in range(10)]})
    else:
        plot_glimpses(model, _image(), tmp_path / "attend.png", glimpses=6, map_glimpse=map_glimpse)
    (fig,) = figures
    assert overlapping_text(fig, inside=False) == []  # written with bbox_inches="tight": it grows to its texts
