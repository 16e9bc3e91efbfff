"""Every PIL mode is read as 8-bit RGB the same way by the data folders, ``attend`` and fixation
stimuli; what cannot be converted is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bioattn.attention import plots
from bioattn.data.folders import ImageFolderDataset
from bioattn.errors import BioattnError
from bioattn.images import ALPHA_BACKGROUND, open_rgb, to_rgb

W, H = 6, 4


def _ramp16() -> np.ndarray:
    """A 16-bit horizontal ramp from 0 to 65535."""
    return np.tile(np.linspace(0, 65535, W).round().astype(np.uint16), (H, 1))


def _write(path: Path, img: Image.Image) -> Path:
    img.save(path)
    return path


def _rgb(path: Path) -> np.ndarray:
    img = open_rgb(path)
    assert img.mode == "RGB" and img.size == (W, H)
    return np.asarray(img).astype(int)


def test_16bit_greyscale_png_and_tiff_are_scaled_by_their_range_not_clipped(tmp_path):
    ramp = _ramp16()
    expected = np.rint(ramp / 257).astype(int)
    for name in ("g16.png", "g16.tif"):
        path = _write(tmp_path / name, Image.fromarray(ramp))
        with Image.open(path) as raw:
            assert raw.mode.startswith("I")
        rgb = _rgb(path)
        assert (rgb == expected[..., None]).all(), name
        assert rgb.max() == 255 and rgb.min() == 0 and len(np.unique(rgb)) == W  # a ramp, not white


def test_16bit_big_endian_and_32bit_integer_modes(tmp_path):
    ramp = _ramp16()
    big = Image.frombytes("I;16B", (W, H), ramp.astype(">u2").tobytes())
    assert (np.asarray(to_rgb(big))[..., 0] == np.rint(ramp / 257)).all()
    as_int = Image.fromarray(ramp.astype(np.int32))
    assert as_int.mode == "I"
    assert (np.asarray(to_rgb(as_int))[..., 1] == np.rint(ramp / 257)).all()
    with pytest.raises(BioattnError, match="do not fit 16 bits") as info:
        to_rgb(Image.fromarray(np.full((H, W), -5, np.int32)), "image x.tif")
    assert "\n" not in str(info.value) and str(info.value).startswith("image x.tif")


def test_float_images_in_0_1_or_0_255_and_refused_otherwise():
    half = Image.fromarray(np.full((H, W), 0.5, np.float32))
    assert np.asarray(to_rgb(half))[0, 0].tolist() == [128, 128, 128]
    grey = Image.fromarray(np.full((H, W), 200.0, np.float32))
    assert np.asarray(to_rgb(grey))[0, 0].tolist() == [200, 200, 200]
    for bad in (np.full((H, W), 300.0), np.full((H, W), np.nan)):
        with pytest.raises(BioattnError, match="floating-point pixels"):
            to_rgb(Image.fromarray(bad.astype(np.float32)))


def test_palette_with_and_without_transparency(tmp_path):
    colours = np.zeros((H, W, 3), np.uint8)
    colours[:, : W // 2] = (255, 0, 0)
    colours[:, W // 2:] = (0, 0, 255)
    palette = Image.fromarray(colours).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    path = _write(tmp_path / "p.png", palette)
    rgb = _rgb(path)
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[0, -1].tolist() == [0, 0, 255]
    red_index = palette.getpixel((0, 0))
    path = tmp_path / "p_transparent.png"
    palette.save(path, transparency=red_index)
    rgb = _rgb(path)
    assert rgb[0, 0].tolist() == list(ALPHA_BACKGROUND) and rgb[0, -1].tolist() == [0, 0, 255]


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = 255                        # red
    rgba[:, : W // 2, 3] = 255                # opaque on the left,
    rgba[:, W // 2:, 3] = 0                   # transparent on the right
    rgba[0, 0, 3] = 128                       # one half-transparent pixel
    rgb = _rgb(_write(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA")))
    assert rgb[1, 0].tolist() == [255, 0, 0] and rgb[1, -1].tolist() == [255, 255, 255]
    assert rgb[0, 0].tolist() == [255, 127, 127]
    la = np.stack([np.full((H, W), 0, np.uint8), rgba[..., 3]], -1)
    rgb = _rgb(_write(tmp_path / "la.png", Image.fromarray(la, "LA")))
    assert rgb[1, 0].tolist() == [0, 0, 0] and rgb[1, -1].tolist() == [255, 255, 255]
    for mode in ("RGBa", "La", "PA"):
        img = to_rgb(Image.new(mode, (W, H)))  # fully transparent
        assert img.mode == "RGB" and img.getpixel((0, 0)) == ALPHA_BACKGROUND, mode


def test_greyscale_bilevel_cmyk_and_other_colour_spaces(tmp_path):
    grey = np.tile(np.arange(W, dtype=np.uint8) * 40, (H, 1))
    rgb = _rgb(_write(tmp_path / "l.png", Image.fromarray(grey, "L")))
    assert (rgb == grey[..., None]).all()
    bilevel = Image.fromarray(grey > 100)
    assert bilevel.mode == "1"
    rgb = _rgb(_write(tmp_path / "one.png", bilevel))
    assert set(np.unique(rgb)) == {0, 255} and (rgb[..., 0] == 255 * (grey > 100)).all()
    cmyk = Image.new("CMYK", (W, H), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    rgb = _rgb(_write(tmp_path / "cmyk.jpg", cmyk))
    assert rgb[..., 0].min() > 200 and rgb[..., 1:].max() < 60  # red, within JPEG's loss
    for mode, value, expected in (("YCbCr", (128, 128, 128), (128, 128, 128)),
                                  ("HSV", (0, 255, 255), (255, 0, 0)),
                                  ("LAB", (255, 128, 128), (254, 255, 254))):
        assert to_rgb(Image.new(mode, (1, 1), value)).getpixel((0, 0)) == expected, mode


def test_unreadable_and_missing_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(BioattnError, match="cannot read image") as info:
        open_rgb(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(BioattnError, match="image not found"):
        open_rgb(tmp_path / "missing.png")
    with pytest.raises(BioattnError, match="is a directory"):
        open_rgb(tmp_path)


def test_folders_and_attend_use_the_same_loader(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    ramp = _ramp16()
    _write(root / "a" / "g16.png", Image.fromarray(ramp))
    dataset = ImageFolderDataset(root)
    img, label = dataset[0]
    assert label == 0 and img.mode == "RGB"
    assert (np.asarray(img)[..., 0] == np.rint(ramp / 257)).all()
    x, shown = plots.load_image(root / "a" / "g16.png", (H, W), (0.0,) * 3, (1.0,) * 3)
    assert np.allclose(shown[..., 0], np.rint(ramp / 257) / 255.0)
    assert x.shape == (1, 3, H, W) and float(x.max()) == pytest.approx(1.0) and float(x.min()) == 0.0


def test_image_files_are_read_at_the_size_the_caller_gives(tmp_path):
    from bioattn.data import build_dataset

    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        _write(root / split / "a" / "x.png", Image.fromarray(_ramp16()))
    # files have no size of their own: the model's, resolved by the caller, is required
    with pytest.raises(BioattnError, match="give the model's input size"):
        build_dataset(str(root), "val")
    x, _ = build_dataset(str(root), "val", img_size=24, crop_pct=1.0)[0]
    assert x.shape == (3, 24, 24)
