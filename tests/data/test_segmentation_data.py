"""Segmentation data: the VOC, ADE20K and Cityscapes layouts, the embedded label maps, the joint
transforms and the refusal of bad label files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bioattn.data.embedded import EmbeddedArrays, EmbeddedSpec, load_embedded
from bioattn.data.segmentation import (
    ADE20KSegmentation,
    CityscapesSegmentation,
    EmbeddedSegmentation,
    SegmentationTransform,
    VOCSegmentation,
    build_segmentation_dataset,
    embedded_label_map,
    hsv_to_rgb,
    photometric_distortion,
    rgb_to_hsv,
)
from bioattn.errors import BioattnError

TINY = "embedded:train=8,val=8,test=8,size=32"
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _image(path: Path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _grey_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), "L").save(path)


def _palette_label(path: Path, label: np.ndarray) -> None:
    """A VOC-style palette PNG: index k drawn in a colour whose values are not k."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label.astype(np.uint8), "P")
    colours = np.zeros((256, 3), np.uint8)
    colours[:, 0] = 255 - np.arange(256)
    colours[:, 1] = (np.arange(256) * 7) % 256
    img.putpalette(colours.reshape(-1).tolist())
    img.save(path)


def _label_values(shape, values, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.asarray(values), size=shape).astype(np.uint8)


def make_voc(root: Path, names=("2007_000001", "2007_000002", "2007_000003"), aug: bool = False) -> dict:
    """A VOCdevkit/VOC2012 tree; returns the label arrays written, by name (and by 'aug:' name)."""
    base = root / "VOCdevkit" / "VOC2012"
    written = {}
    for i, name in enumerate(names):
        _image(base / "JPEGImages" / f"{name}.jpg", 24, 32, seed=i)
        label = _label_values((24, 32), [0, 1, 15, 20, 255], seed=i)
        _palette_label(base / "SegmentationClass" / f"{name}.png", label)
        written[name] = label
        if aug:
            aug_label = _label_values((24, 32), [0, 3, 7], seed=100 + i)
            _grey_label(base / "SegmentationClassAug" / f"{name}.png", aug_label)
            written["aug:" + name] = aug_label
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (lists / "val.txt").write_text(names[2] + "\n")
    if aug:
        (lists / "trainaug.txt").write_text("\n".join(names) + "\n")
    return written


# ------------------------------------------------------------------------------------------
# VOC
# ------------------------------------------------------------------------------------------
def test_voc_reads_palette_indices_not_colours(tmp_path):
    written = make_voc(tmp_path)
    ds = VOCSegmentation(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.classes[0] == "background" and ds.ignore_index == 255
    image, label = ds[1]
    assert image.dtype == torch.float32 and image.shape == (3, 24, 32)
    assert label.dtype == torch.int64
    np.testing.assert_array_equal(label.numpy(), written["2007_000002"])
    val = VOCSegmentation(tmp_path, "val")
    np.testing.assert_array_equal(val[0][1].numpy(), written["2007_000003"])


@pytest.mark.parametrize("where", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_root_may_be_the_devkit_or_above(tmp_path, where):
    make_voc(tmp_path)
    assert len(VOCSegmentation(tmp_path / where, "val")) == 1


def test_voc_train_uses_the_augmented_set_when_present(tmp_path):
    written = make_voc(tmp_path, aug=True)
    ds = VOCSegmentation(tmp_path, "train")
    assert len(ds) == 3 and ds.label_dir.name == "SegmentationClassAug"
    np.testing.assert_array_equal(ds[0][1].numpy(), written["aug:2007_000001"])
    # validation still reads the original labels
    np.testing.assert_array_equal(VOCSegmentation(tmp_path, "val")[0][1].numpy(), written["2007_000003"])


def test_voc_without_its_layout_names_the_expected_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BioattnError, match=r"VOCdevkit/VOC2012/JPEGImages") as exc:
        VOCSegmentation(tmp_path / "empty", "train")
    assert "\n" not in str(exc.value)


def test_voc_image_without_label_is_refused_at_construction(tmp_path):
    make_voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000002.png").unlink()
    with pytest.raises(BioattnError, match=r"1 of 2 images have no label file.*2007_000002") as exc:
        VOCSegmentation(tmp_path, "train")
    assert "\n" not in str(exc.value)


def test_label_of_another_size_is_refused_with_its_name(tmp_path):
    make_voc(tmp_path)
    _palette_label(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000001.png", np.zeros((20, 32), np.uint8))
    ds = VOCSegmentation(tmp_path, "train")
    with pytest.raises(BioattnError, match=r"2007_000001\.png is 32x20 but its image .* is 32x24"):
        ds[0]
    ds[1]  # the other pair is fine


def test_label_values_outside_the_classes_are_refused(tmp_path):
    make_voc(tmp_path)
    label = np.zeros((24, 32), np.uint8)
    label[3, 4], label[5, 6] = 30, 255
    _palette_label(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000001.png", label)
    with pytest.raises(BioattnError, match=r"holds values 30 outside \[0, 21\)") as exc:
        VOCSegmentation(tmp_path, "train")[0]
    assert "\n" not in str(exc.value)


def test_colour_label_maps_are_refused(tmp_path):
    make_voc(tmp_path)
    Image.new("RGB", (32, 24), (128, 0, 0)).save(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000001.png")
    with pytest.raises(BioattnError, match=r"PIL mode RGB; expected class indices"):
        VOCSegmentation(tmp_path, "train")[0]


# ------------------------------------------------------------------------------------------
# ADE20K and Cityscapes
# ------------------------------------------------------------------------------------------
def make_ade(root: Path, n: int = 2) -> list[np.ndarray]:
    base = root / "ADEChallengeData2016"
    labels = []
    for folder in ("training", "validation"):
        for i in range(n):
            _image(base / "images" / folder / f"ADE_{folder}_{i:08d}.jpg", 16, 20, seed=i)
            label = _label_values((16, 20), [0, 1, 5, 150], seed=i)
            _grey_label(base / "annotations" / folder / f"ADE_{folder}_{i:08d}.png", label)
            if folder == "training":
                labels.append(label)
    return labels


def test_ade20k_reduces_the_zero_label(tmp_path):
    raw = make_ade(tmp_path)
    ds = ADE20KSegmentation(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 150 and ds.classes[0] == "wall" and ds.classes[-1] == "flag"
    label = ds[0][1].numpy()
    expected = np.where(raw[0] == 0, 255, raw[0].astype(np.int64) - 1)
    np.testing.assert_array_equal(label, expected)
    assert set(np.unique(label)) <= {0, 4, 149, 255}
    assert len(ADE20KSegmentation(tmp_path / "ADEChallengeData2016", "val")) == 2


def test_ade20k_missing_annotations_folder_is_named(tmp_path):
    make_ade(tmp_path)
    for p in (tmp_path / "ADEChallengeData2016/annotations/validation").iterdir():
        p.unlink()
    (tmp_path / "ADEChallengeData2016/annotations/validation").rmdir()
    with pytest.raises(BioattnError, match=r"expected the folder .*annotations/validation"):
        ADE20KSegmentation(tmp_path, "val")


def test_ade20k_reports_how_many_images_lack_labels(tmp_path):
    make_ade(tmp_path, n=3)
    for i in (0, 2):
        (tmp_path / f"ADEChallengeData2016/annotations/training/ADE_training_{i:08d}.png").unlink()
    with pytest.raises(BioattnError, match=r"2 of 3 images have no label file .*first: ADE_training_00000000\.jpg"):
        ADE20KSegmentation(tmp_path, "train")


def make_cityscapes(root: Path) -> None:
    ids = np.array([[7, 26, 0, 33], [24, 24, 1, 11]], np.uint8).repeat(4, 0).repeat(4, 1)  # 8x16
    for city, stem in (("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")):
        _image(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", 8, 16)
        _grey_label(root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", ids)
    # bonn also has train ids, which win over the label ids
    _grey_label(root / "gtFine/train/bonn/bonn_000001_000019_gtFine_labelTrainIds.png", np.full((8, 16), 3, np.uint8))


def test_cityscapes_maps_label_ids_to_train_ids_unless_given(tmp_path):
    make_cityscapes(tmp_path)
    ds = CityscapesSegmentation(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.classes[13] == "car"
    mapped = ds[0][1].numpy()
    # road 7 -> 0, car 26 -> 13, unlabeled 0 -> 255, bicycle 33 -> 18, person 24 -> 11, ego vehicle 1 -> 255,
    # building 11 -> 2
    expected = np.array([[0, 13, 255, 18], [11, 11, 255, 2]]).repeat(4, 0).repeat(4, 1)
    np.testing.assert_array_equal(mapped, expected)
    assert (ds[1][1] == 3).all()


def test_cityscapes_image_without_labels_is_refused(tmp_path):
    make_cityscapes(tmp_path)
    _image(tmp_path / "leftImg8bit/train/bonn/bonn_000002_000019_leftImg8bit.png", 8, 16)
    with pytest.raises(BioattnError, match=r"1 of 3 images have no label file"):
        CityscapesSegmentation(tmp_path, "train")
    with pytest.raises(BioattnError, match=r"expected the folder .*leftImg8bit"):
        CityscapesSegmentation(tmp_path / "leftImg8bit", "train")


# ------------------------------------------------------------------------------------------
# the embedded shapes
# ------------------------------------------------------------------------------------------
def test_embedded_label_maps_follow_the_masks(tmp_path):
    arrays = load_embedded(EmbeddedSpec.parse(TINY), "val", cache_dir=tmp_path)
    ds = EmbeddedSegmentation(arrays, mean=MEAN, std=STD)
    assert ds.num_classes == 11 and ds.classes[0] == "background" and ds.classes[1] == "disk"
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (3, 32, 32) and label.shape == (32, 32)
        mask, cls = np.asarray(arrays.masks[i]), int(arrays.labels[i])
        np.testing.assert_array_equal(label.numpy(), np.where(mask, cls + 1, 0))
        expected = (torch.from_numpy(np.array(arrays.images[i])).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
        torch.testing.assert_close(image, expected)


def test_embedded_pairs_paint_the_second_object_over_the_first(tmp_path):
    arrays = load_embedded(EmbeddedSpec.parse(TINY + ",pair"), "test", cache_dir=tmp_path)
    for i in range(len(arrays)):
        label = embedded_label_map(arrays, i)
        (c0, c1), (m0, m1) = arrays.labels[i], arrays.masks[i]
        assert (label[m1] == c1 + 1).all()
        assert (label[m0 & ~m1] == c0 + 1).all()
        assert (label[~(m0 | m1)] == 0).all()
    # where the masks overlap, the second object's class wins
    masks = np.zeros((1, 2, 4, 4), bool)
    masks[0, 0, :2, :3] = True
    masks[0, 1, 1:3, 2:] = True
    overlapping = EmbeddedArrays(images=np.zeros((1, 4, 4, 3), np.uint8), labels=np.array([[2, 5]]), masks=masks,
                                 boxes=np.zeros((1, 2, 4), np.int64), n_distractors=np.zeros(1, np.int64))
    expected = np.array([[3, 3, 3, 0], [3, 3, 6, 6], [0, 0, 6, 6], [0, 0, 0, 0]])
    np.testing.assert_array_equal(embedded_label_map(overlapping, 0), expected)


def test_builder_reads_embedded_seg_specs(tmp_path):
    val = build_segmentation_dataset(TINY.replace("embedded:", "embedded:seg,"), "val", crop=32, mean=MEAN,
                                     std=STD, cache_dir=tmp_path)
    assert isinstance(val, EmbeddedSegmentation) and len(val) == 8 and not val.arrays.pair
    assert val[0][0].shape == (3, 32, 32)
    train = build_segmentation_dataset("embedded:seg,pair,train=8,val=8,test=8,size=32", "train", crop=24,
                                       mean=MEAN, std=STD, train=True, cache_dir=tmp_path)
    assert train.arrays.pair
    image, label = train[3]
    assert image.shape == (3, 24, 24) and label.shape == (24, 24)
    assert set(label.unique().tolist()) <= {0, 255, *(int(c) + 1 for c in train.arrays.labels[3])}
    with pytest.raises(BioattnError, match=r"not a segmentation spec"):
        build_segmentation_dataset(TINY, "val", crop=32, cache_dir=tmp_path)


def test_builder_reads_voc_ade_and_cityscapes(tmp_path):
    make_voc(tmp_path / "voc")
    make_ade(tmp_path / "ade")
    make_cityscapes(tmp_path / "city")
    for spec, n in ((f"voc:{tmp_path / 'voc'}", 2), (f"ade20k:{tmp_path / 'ade'}", 2),
                    (f"cityscapes:{tmp_path / 'city'}", 2)):
        ds = build_segmentation_dataset(spec, "train", crop=16, mean=MEAN, std=STD, train=True)
        image, label = ds[0]
        assert len(ds) == n and image.shape == (3, 16, 16) and label.shape == (16, 16)
    # evaluation rescales the image to the base scale (2048x512) and keeps the label's size
    image, label = build_segmentation_dataset(f"voc:{tmp_path / 'voc'}", "val", crop=16, mean=MEAN, std=STD)[0]
    assert image.shape == (3, 512, 683) and label.shape == (24, 32)
    with pytest.raises(BioattnError, match=r"needs a folder"):
        build_segmentation_dataset("voc:", "train", crop=16)
    with pytest.raises(BioattnError, match=r"not a segmentation data spec"):
        build_segmentation_dataset("imagenet:/x", "train", crop=16)


def test_builder_refuses_specs_without_label_maps(tmp_path):
    for spec in ("embedded:pair", "embedded:multi", "/data/voc"):
        with pytest.raises(BioattnError, match=r"not a segmentation (data )?spec"):
            build_segmentation_dataset(spec, "train", crop=16, cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------
# joint transforms
# ------------------------------------------------------------------------------------------
def test_nearest_resize_keeps_label_values():
    torch.manual_seed(0)
    label = np.kron(_label_values((6, 8), [0, 3, 7, 255]), np.ones((5, 5), np.uint8))  # 30x40 blocks
    image = np.zeros((30, 40, 3), np.uint8)
    transform = SegmentationTransform(True, crop=24, scale=40, photometric=False)
    for _ in range(10):
        _, out = transform(image, label)
        assert set(out.unique().tolist()) <= {0, 3, 7, 255}


def test_padding_fills_the_label_with_255_and_the_image_with_0():
    image = np.full((20, 20, 3), 200, np.uint8)
    label = np.ones((20, 20), np.uint8)
    transform = SegmentationTransform(True, crop=32, scale=20, ratio_range=(1.0, 1.0), photometric=False,
                                      mean=MEAN, std=STD)
    x, y = transform(image, label)
    assert x.shape == (3, 32, 32) and y.shape == (32, 32)
    assert (y[20:, :] == 255).all() and (y[:, 20:] == 255).all() and (y[:20, :20] == 1).all()
    assert (x[:, 20:, :] == 0).all() and (x[:, :, 20:] == 0).all()
    torch.testing.assert_close(x[:, :20, :20], torch.full((3, 20, 20), (200 / 255 - 0.5) / 0.25))


def test_flips_move_image_and_label_together():
    torch.manual_seed(1)
    label = np.zeros((16, 16), np.uint8)
    label[:, :5] = 1
    image = np.zeros((16, 16, 3), np.uint8)
    image[label == 1] = 255
    always = SegmentationTransform(True, crop=16, scale=16, ratio_range=(1.0, 1.0), hflip=1.0,
                                   photometric=False, mean=(0, 0, 0), std=(1, 1, 1), cat_max_ratio=None)
    x, y = always(image, label)
    assert (y[:, -5:] == 1).all() and (y[:, :-5] == 0).all()
    sometimes = SegmentationTransform(True, crop=12, scale=16, ratio_range=(1.0, 1.0), photometric=False,
                                      mean=(0, 0, 0), std=(1, 1, 1))
    flipped = 0
    for _ in range(20):
        x, y = sometimes(image, label)
        valid = y != 255
        np.testing.assert_array_equal((x[0] > 0.5)[valid].numpy(), (y == 1)[valid].numpy())
        flipped += int(bool((y[:, -1] == 1).any()))
    assert 0 < flipped < 20


def test_crops_have_the_crop_size_whatever_the_scale():
    torch.manual_seed(2)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    label = _label_values((48, 64), [0, 1, 2])
    transform = SegmentationTransform(True, crop=(24, 40), scale=(64, 48))
    for _ in range(8):
        x, y = transform(image, label)
        assert x.shape == (3, 24, 40) and y.shape == (24, 40) and x.dtype == torch.float32
        assert y.dtype == torch.int64


def test_cat_max_ratio_prefers_crops_with_several_classes():
    label = np.zeros((32, 32), np.uint8)
    label[:8, :8] = 1
    image = np.zeros((32, 32, 3), np.uint8)

    def mixed(cat_max_ratio) -> int:
        torch.manual_seed(3)
        t = SegmentationTransform(True, crop=8, scale=32, ratio_range=(1.0, 1.0), hflip=0.0, photometric=False,
                                  cat_max_ratio=cat_max_ratio)
        return sum(len(t(image, label)[1].unique()) > 1 for _ in range(100))

    assert mixed(0.75) > 2 * mixed(None)


def test_evaluation_transform_rescales_only_the_image():
    image = np.zeros((20, 40, 3), np.uint8)
    label = np.ones((20, 40), np.uint8)
    x, y = SegmentationTransform(False, scale=(80, 30))(image, label)
    assert x.shape == (3, 30, 60) and y.shape == (20, 40)
    x, y = SegmentationTransform(False)(Image.fromarray(image), label)
    assert x.shape == (3, 20, 40)


def test_transform_refuses_a_label_of_another_size():
    with pytest.raises(BioattnError, match=r"does not match its image"):
        SegmentationTransform(False)(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 12), np.uint8))
    with pytest.raises(BioattnError, match=r"needs a crop size and a base scale"):
        SegmentationTransform(True, crop=8)


def test_hsv_conversion_matches_matplotlib():
    from matplotlib.colors import rgb_to_hsv as matplotlib_rgb_to_hsv

    rgb = torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(0))
    rgb[:, 0, 0] = 0.5  # a grey pixel
    hsv = rgb_to_hsv(rgb)
    expected = torch.from_numpy(matplotlib_rgb_to_hsv(rgb.permute(1, 2, 0).numpy())).permute(2, 0, 1)
    torch.testing.assert_close(hsv, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(hsv_to_rgb(hsv), rgb, atol=1e-5, rtol=0)
    # a batch converts image by image
    batch = torch.stack([rgb, rgb.flip(-1)])
    torch.testing.assert_close(rgb_to_hsv(batch), torch.stack([hsv, rgb_to_hsv(rgb.flip(-1))]))
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(batch)), batch, atol=1e-5, rtol=0)


def test_photometric_distortion_keeps_grey_grey_and_stays_in_range():
    grey = torch.arange(0, 256, dtype=torch.float32).view(1, 16, 16).repeat(3, 1, 1)
    colour = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    changed = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out = photometric_distortion(grey)
        # saturation and hue leave grey pixels grey; brightness and contrast keep channels equal
        torch.testing.assert_close(out[0], out[1], atol=1e-3, rtol=0)
        torch.testing.assert_close(out[0], out[2], atol=1e-3, rtol=0)
        torch.manual_seed(seed)
        out = photometric_distortion(colour)
        assert out.min() >= 0 and out.max() <= 255
        changed += int(not torch.allclose(out, colour))
    assert changed >= 15  # each of four steps happens with probability 1/2
