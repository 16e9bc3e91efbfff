"""Multi-label data: COCO 2017 read with pycocotools (on a tiny fixture in the COCO layout) and
the builder for ``coco:ROOT`` and ``embedded:multi``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bioattn.data import Augmentation, build_dataset
from bioattn.data.coco import COCOMultiLabel
from bioattn.data.embedded import EmbeddedMultiLabel
from bioattn.errors import BioattnError

# categories listed out of id order: indices follow the ids (1 person, 3 car, 18 dog)
CATEGORIES = [{"id": 18, "name": "dog", "supercategory": "animal"},
              {"id": 1, "name": "person", "supercategory": "person"},
              {"id": 3, "name": "car", "supercategory": "vehicle"}]


def _square(x0, y0, side):
    return [[x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]]


def _annotation(ann_id, image_id, category_id, x0, y0, side, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": iscrowd,
            "segmentation": _square(x0, y0, side), "area": float(side * side),
            "bbox": [float(x0), float(y0), float(side), float(side)]}


def _write_split(root: Path, split: str, images: list[dict], annotations: list[dict]) -> None:
    folder = root / f"{split}2017"
    folder.mkdir(parents=True, exist_ok=True)
    for im in images:
        Image.new("RGB", (im["width"], im["height"]), (40, 80, 120)).save(folder / im["file_name"])
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(
        {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": CATEGORIES}))


@pytest.fixture
def coco(tmp_path) -> Path:
    root = tmp_path / "coco"
    train_images = [{"id": 7, "file_name": "000000000007.jpg", "width": 40, "height": 20},
                    {"id": 2, "file_name": "000000000002.jpg", "width": 24, "height": 24},
                    {"id": 5, "file_name": "000000000005.jpg", "width": 32, "height": 16}]
    _write_split(root, "train", train_images, [
        _annotation(1, 7, 1, 2, 2, 4),                # person, 16 px of 800: small
        _annotation(2, 7, 18, 10, 0, 16),             # dog
        _annotation(3, 7, 1, 30, 4, 6),               # a second person
        _annotation(4, 5, 3, 0, 0, 15, iscrowd=1),    # a crowd of cars still counts
    ])                                                # image 2 has no annotation
    _write_split(root, "val", [{"id": 9, "file_name": "000000000009.jpg", "width": 20, "height": 20}],
                 [_annotation(5, 9, 3, 4, 4, 8)])
    return root


# ------------------------------------------------------------------------------------------
# COCOMultiLabel
# ------------------------------------------------------------------------------------------
def test_classes_follow_category_ids(coco):
    ds = COCOMultiLabel(coco, "train")
    assert ds.classes == ["person", "car", "dog"] and ds.num_classes == 3
    assert ds.category_ids == [1, 3, 18]
    assert ds.image_ids == [2, 5, 7]                       # sorted by id
    np.testing.assert_array_equal(ds.label_matrix, [[0, 0, 0], [0, 1, 0], [1, 0, 1]])
    assert ds.multilabel and len(ds) == 3


def test_items_are_images_and_multi_hot_targets(coco):
    ds = COCOMultiLabel(coco, "train")
    img, target = ds[2]
    assert isinstance(img, Image.Image) and img.size == (40, 20) and img.mode == "RGB"
    assert target.dtype == torch.float32 and target.tolist() == [1.0, 0.0, 1.0]
    assert ds[0][1].tolist() == [0.0, 0.0, 0.0]            # the image without annotations is kept
    with_transform = COCOMultiLabel(coco, "train", transform=lambda im: torch.zeros(3, im.height, im.width))
    assert with_transform[2][0].shape == (3, 20, 40)


def test_empty_images_can_be_dropped(coco):
    ds = COCOMultiLabel(coco, "train", keep_empty=False)
    assert ds.image_ids == [5, 7] and ds.label_matrix.sum(axis=1).min() == 1


def test_objects_and_their_masks(coco):
    ds = COCOMultiLabel(coco, "train")
    objects = ds.objects(2)                                # image 7: 40 x 20
    assert objects["labels"].tolist() == [0, 2, 0]
    np.testing.assert_allclose(objects["boxes"][1], [10, 0, 26, 16])
    np.testing.assert_allclose(objects["areas"], [16, 256, 36])
    np.testing.assert_allclose(objects["area_fractions"], [16 / 800, 256 / 800, 36 / 800])
    assert objects["size"].tolist() == [40, 20] and not objects["iscrowd"].any()
    assert ds.objects(1)["iscrowd"].tolist() == [True]
    masks = ds.object_masks(2)
    assert masks.shape == (3, 20, 40) and masks.dtype == bool
    assert masks[1, 0:16, 10:26].sum() == masks[1].sum() > 200     # the dog's square
    assert ds.object_masks(0).shape == (0, 24, 24) and len(ds.objects(0)["labels"]) == 0


def test_missing_images_are_counted_and_named(coco):
    (coco / "train2017" / "000000000005.jpg").unlink()
    with pytest.raises(BioattnError, match=r"^1 of the 3 images listed in .*instances_train2017.json are "
                                           r"missing from .*train2017 \(first: 000000000005.jpg\)$"):
        COCOMultiLabel(coco, "train")


def test_annotations_of_another_folder(coco):
    other = coco / "annotations" / "instances_val2017.json"
    other.write_text((coco / "annotations" / "instances_train2017.json").read_text())
    with pytest.raises(BioattnError, match=r"val2017 holds none of the 3 images listed in .*instances_val2017.json "
                                           r"\(first: 000000000002.jpg\)"):
        COCOMultiLabel(coco, "val")


@pytest.mark.parametrize("damage, message", [
    ("missing", "COCO annotation file not found"),
    ("not json", "is not valid JSON"),
    ("a list", "is malformed"),
    ("no file name", r"is malformed \(an entry lacks 'file_name'\)"),
    ("unknown category", r"1 annotation\(s\) of unlisted categories \(first: category 99\)"),
    ("no images", "lists no images"),
])
def test_bad_annotation_files(coco, damage, message):
    path = coco / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    if damage == "missing":
        path.unlink()
    elif damage == "not json":
        path.write_text("{not json")
    elif damage == "a list":
        path.write_text("[1, 2]")
    else:
        if damage == "no file name":
            del data["images"][0]["file_name"]
        elif damage == "unknown category":
            data["annotations"][0]["category_id"] = 99
        else:
            data["images"] = []
        path.write_text(json.dumps(data))
    with pytest.raises(BioattnError, match=message) as info:
        COCOMultiLabel(coco, "val")
    assert "\n" not in str(info.value)


def test_bad_root_and_split(coco, tmp_path):
    with pytest.raises(BioattnError, match="unknown COCO split 'test'"):
        COCOMultiLabel(coco, "test")
    with pytest.raises(BioattnError, match="COCO folder not found"):
        COCOMultiLabel(tmp_path / "nowhere", "val")


def test_pycocotools_progress_is_silenced(coco, capsys):
    COCOMultiLabel(coco, "val")
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------------------
# build_dataset on multi-label specs
# ------------------------------------------------------------------------------------------
def test_the_one_builder_gives_multi_hot_targets_for_multi_label_specs_only(tmp_path):
    single = build_dataset("embedded:size=32,train=12,val=6,test=6", "val", cache_dir=tmp_path)
    multi = build_dataset("embedded:multi,size=32,train=12,val=6,test=6", "val", cache_dir=tmp_path)
    assert isinstance(single[0][1], int) and not getattr(single, "multilabel", False)
    assert multi[0][1].shape == (10,) and multi.multilabel
    with pytest.raises(BioattnError, match="come with its annotations"):
        build_dataset("embedded:multi,size=32,train=12,val=6,test=6", "val", classes=["a"], cache_dir=tmp_path)
    with pytest.raises(BioattnError, match="class subset"):
        build_dataset("coco:/somewhere", "val", img_size=32, subset=["person"])


def test_build_coco(coco):
    ds = build_dataset(f"coco:{coco}", "val", img_size=32)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.tolist() == [0.0, 1.0, 0.0]
    test = build_dataset(f"coco:{coco}", "test", img_size=32)    # COCO's test: its val
    assert test.image_ids == [9]
    train = build_dataset(f"coco:{coco}", "train", img_size=32, train=True,
                                     aug=Augmentation(hflip=0.5, re_prob=0.25))
    assert train[2][0].shape == (3, 32, 32) and train[2][1].tolist() == [1.0, 0.0, 1.0]


def test_coco_evaluation_keeps_the_whole_image(coco):
    """A wide image is squashed, not centre-cropped: its left edge (an object there) stays."""
    image = np.zeros((16, 48, 3), np.uint8)
    image[:, :6] = 255                                  # a white band on the left
    Image.fromarray(image).save(coco / "val2017" / "000000000009.jpg")
    x = build_dataset(f"coco:{coco}", "val", img_size=32, mean=(0, 0, 0), std=(1, 1, 1))[0][0]
    assert x[:, :, :2].mean() > 0.8 and x[:, :, 8:].mean() < 0.1


def test_coco_training_crops_keep_half_the_image(coco):
    """Training crops cover at least half of the image, so each one holds the image's centre
    (small objects elsewhere may go, but a crop is never a small corner); crops still vary."""
    for name, (w, h) in {"000000000007.jpg": (40, 20), "000000000002.jpg": (24, 24),
                         "000000000005.jpg": (32, 16)}.items():
        image = np.zeros((h, w, 3), np.uint8)
        image[h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2] = 255  # a white mark at the centre
        Image.fromarray(image).save(coco / "train2017" / name, quality=95)
    ds = build_dataset(f"coco:{coco}", "train", img_size=32, mean=(0, 0, 0), std=(1, 1, 1), train=True,
                                  aug=Augmentation())
    torch.manual_seed(0)
    for i in range(len(ds)):
        draws = [ds[i][0] for _ in range(25)]
        assert all(float(x.max()) > 0.5 for x in draws), "a crop lost the image's centre"
        assert any(not torch.allclose(draws[0], x) for x in draws[1:]), "the crops never vary"
    whole = build_dataset(f"coco:{coco}", "train", img_size=32, train=True,
                                     aug=Augmentation(random_resized_crop=False, hflip=0.5))
    assert whole[2][0].shape == (3, 32, 32)


def test_build_embedded_multi(tmp_path):
    spec = "embedded:multi,size=32,train=12,val=6,test=6,seed=2"
    ds = build_dataset(spec, "val", cache_dir=tmp_path)
    assert isinstance(ds, EmbeddedMultiLabel) and ds.num_classes == 10
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y.shape == (10,)
    labels = ds.arrays.labels[0]
    assert set(torch.nonzero(y).flatten().tolist()) == set(labels[labels >= 0].tolist())
    bigger = build_dataset(spec, "train", img_size=48, train=True,
                                      aug=Augmentation(hflip=0.5, re_prob=1.0), cache_dir=tmp_path)
    assert bigger[0][0].shape == (3, 48, 48) and bigger.multilabel
    plain = build_dataset(spec, "train", cache_dir=tmp_path)
    np.testing.assert_array_equal(bigger.label_matrix, plain.label_matrix)
    torch.testing.assert_close(bigger[3][1], plain[3][1])


@pytest.mark.parametrize("spec, message", [
    ("coco:", "'coco:' needs the COCO folder"),
    ("coco:/no/such/coco", "COCO folder not found: /no/such/coco"),
    ("embedded:multi,pair", "'multi' and 'pair' exclude each other"),
])
def test_build_errors(spec, message, tmp_path):
    with pytest.raises(BioattnError, match=message):
        build_dataset(spec, "val", img_size=32, cache_dir=tmp_path)
