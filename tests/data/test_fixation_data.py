"""Loading MIT1003- and SALICON-style fixation data sets."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bioattn.data.human_fixations import FixationDataset, load_fixation_dataset
from bioattn.errors import BioattnError

H, W = 12, 16


def _points_array(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = np.zeros((H, W), dtype=bool)
    pts[rng.integers(0, H, 5), rng.integers(0, W, 5)] = True
    return pts


def _density_array(seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    cy, cx = 3 + seed % 6, 4 + seed % 8
    return (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)).astype(np.uint8)


def _save(path: Path, array: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def make_mit_tree(root: Path, stems=("i1", "i2", "i3")) -> Path:
    """MIT1003 layout: ALLSTIMULI/name.jpeg, ALLFIXATIONMAPS/name_fixPts.jpg + name_fixMap.jpg."""
    for k, stem in enumerate(stems):
        _save(root / "ALLSTIMULI" / f"{stem}.jpeg", _image(k))
        _save(root / "ALLFIXATIONMAPS" / f"{stem}_fixPts.jpg",
              _points_array(k).astype(np.uint8) * 255, quality=75)
        _save(root / "ALLFIXATIONMAPS" / f"{stem}_fixMap.jpg", _density_array(k))
    return root


def make_salicon_tree(root: Path, stems=("a", "b"), density=True) -> Path:
    """SALICON-like layout: images/, fixations/, maps/ with the same stems (in a train/ subfolder)."""
    for k, stem in enumerate(stems):
        _save(root / "images" / "train" / f"{stem}.jpg", _image(k))
        _save(root / "fixations" / "train" / f"{stem}.png", _points_array(k).astype(np.uint8))
        if density:
            _save(root / "maps" / "train" / f"{stem}.png", _density_array(k))
    return root


def test_mit1003_layout(tmp_path):
    ds = load_fixation_dataset(make_mit_tree(tmp_path))
    assert isinstance(ds, FixationDataset)
    assert [item.stem for item in ds] == ["i1", "i2", "i3"]
    assert len(ds) == 3 and ds.n_unmatched == 0 and ds.has_density
    item = ds[1]
    assert item.image_path == tmp_path / "ALLSTIMULI" / "i2.jpeg"
    points, density = item.load_maps()
    assert points.dtype == bool and points.shape == (H, W)
    # JPEG noise around each point (up to ~15% of full scale) must not count as fixations
    np.testing.assert_array_equal(points, _points_array(1))
    assert density.dtype == np.float64 and density.shape == (H, W)
    assert np.abs(density - _density_array(1)).max() < 20  # JPEG-compressed density
    assert item.load_image().mode == "RGB" and item.load_image().size == (W, H)


def test_salicon_layout_and_lossless_points(tmp_path):
    ds = load_fixation_dataset(make_salicon_tree(tmp_path))
    assert [item.stem for item in ds] == ["a", "b"]
    points, density = ds[0].load_maps()
    # PNG point map with values 0/1: every nonzero pixel is a fixation
    np.testing.assert_array_equal(points, _points_array(0))
    np.testing.assert_array_equal(density, _density_array(0).astype(np.float64))
    assert ds[0:1] == [ds[0]]


def test_no_density_maps_at_all(tmp_path):
    ds = load_fixation_dataset(make_salicon_tree(tmp_path, density=False))
    assert not ds.has_density
    assert ds[0].density is None
    points, density = ds[0].load_maps()
    assert density is None and points.any()


def test_point_threshold_override(tmp_path):
    make_salicon_tree(tmp_path, stems=("a",), density=False)
    pts = np.zeros((H, W), dtype=np.uint8)
    pts[1, 1], pts[2, 2] = 200, 50
    _save(tmp_path / "fixations" / "train" / "a.png", pts)
    assert load_fixation_dataset(tmp_path)[0].points.sum() == 2  # lossless: nonzero
    high = load_fixation_dataset(tmp_path, point_threshold=0.5)[0].points
    assert high.sum() == 1 and high[1, 1]
    with pytest.raises(BioattnError, match="point_threshold"):
        load_fixation_dataset(tmp_path, point_threshold=1.0)


def test_unmatched_files_raise_a_clear_error(tmp_path):
    make_mit_tree(tmp_path)
    (tmp_path / "ALLFIXATIONMAPS" / "i2_fixPts.jpg").unlink()  # image without point map
    _save(tmp_path / "ALLFIXATIONMAPS" / "zz_fixMap.jpg", _density_array(0))  # map without image
    with pytest.raises(BioattnError) as err:
        load_fixation_dataset(tmp_path)
    msg = str(err.value)
    assert "2 unmatched file(s)" in msg
    assert "i2 (no fixation points)" in msg
    assert "zz (density map without an image)" in msg
    assert "allow_unmatched" in msg and "\n" not in msg


def test_unmatched_error_lists_ten_then_counts(tmp_path):
    make_salicon_tree(tmp_path, stems=("a",))
    for k in range(13):
        _save(tmp_path / "images" / f"extra{k:02d}.png", _image(k))
    with pytest.raises(BioattnError) as err:
        load_fixation_dataset(tmp_path)
    msg = str(err.value)
    assert msg.count("(no fixation points or density map)") == 10
    assert "extra09" in msg and "extra10" not in msg
    assert msg.startswith("13 unmatched file(s)") and "and 3 more" in msg


def test_allow_unmatched_skips_and_counts(tmp_path):
    make_mit_tree(tmp_path)
    (tmp_path / "ALLFIXATIONMAPS" / "i2_fixMap.jpg").unlink()
    _save(tmp_path / "ALLFIXATIONMAPS" / "orphan_fixPts.jpg", np.zeros((H, W), np.uint8))
    ds = load_fixation_dataset(tmp_path, allow_unmatched=True)
    assert [item.stem for item in ds] == ["i1", "i3"]
    assert ds.n_unmatched == 2
    assert dict(ds.unmatched) == {
        "i2": "no density map",
        "orphan": "fixation points without an image",
    }


def test_maps_are_read_lazily(tmp_path):
    make_salicon_tree(tmp_path)
    (tmp_path / "fixations" / "train" / "b.png").write_bytes(b"not an image")
    ds = load_fixation_dataset(tmp_path)  # nothing read yet
    assert ds[0].points.any()
    with pytest.raises(BioattnError, match="cannot read map .*b.png"):
        _ = ds[1].points


def test_map_size_mismatch(tmp_path):
    make_salicon_tree(tmp_path, stems=("a",))
    _save(tmp_path / "maps" / "train" / "a.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(BioattnError, match="a: fixation point map is 16x12 but the density map is 16x13"):
        load_fixation_dataset(tmp_path)[0].load_maps()


def test_bad_roots(tmp_path):
    with pytest.raises(BioattnError, match="not found"):
        load_fixation_dataset(tmp_path / "missing")
    with pytest.raises(BioattnError, match="no image folder"):
        load_fixation_dataset(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(BioattnError, match="no image files"):
        load_fixation_dataset(tmp_path)
    _save(tmp_path / "images" / "a.png", _image(0))
    with pytest.raises(BioattnError, match="no fixation point maps"):
        load_fixation_dataset(tmp_path)


def test_duplicate_stems(tmp_path):
    make_salicon_tree(tmp_path, stems=("a",))
    _save(tmp_path / "images" / "a.png", _image(1))
    with pytest.raises(BioattnError, match="two image files share the name 'a'"):
        load_fixation_dataset(tmp_path)
