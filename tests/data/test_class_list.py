"""Class subsets of image folders: ``read_class_list`` and ``ImageFolderDataset(subset=...)``."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bioattn.data.folders import ImageFolderDataset, read_class_list
from bioattn.data.imagenet_classes import imagenet_wnids
from bioattn.errors import BioattnError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "imagenet100_classes.txt"


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (4, 4), (10 * i, 0, 0)).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return _folder(tmp_path / "train", {"n01": 2, "n02": 1, "n03": 3, "n04": 1})


# ------------------------------------------------------------------------------------------
# read_class_list
# ------------------------------------------------------------------------------------------
def test_read_class_list_ignores_comments_and_blanks(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my subset\n\nn03  # third\n  n01\t\n\n# n02 is left out\nn04\n")
    assert read_class_list(path) == ["n03", "n01", "n04"]


def test_read_class_list_rejects_duplicates(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("n01\nn02\n# n01\nn01  # again\nn02\n")
    with pytest.raises(BioattnError, match=r"names 2 class\(es\) twice: 'n01' \(lines 1 and 4\), "
                                           r"'n02' \(lines 2 and 5\)$"):
        read_class_list(path)


def test_read_class_list_reads_a_file_that_starts_with_a_byte_order_mark(tmp_path, folder):
    path = tmp_path / "classes.txt"
    path.write_bytes("n03\r\nn01\r\n".encode("utf-8-sig"))  # as some editors save it
    assert read_class_list(path) == ["n03", "n01"]
    ds = ImageFolderDataset(folder, subset=read_class_list(path))
    assert ds.classes == ["n01", "n03"] and len(ds) == 5
    # only a leading mark is dropped: one inside a name is part of it
    path.write_bytes("n03\n\ufeffn01\n".encode("utf-8"))
    assert read_class_list(path) == ["n03", "\ufeffn01"]


@pytest.mark.parametrize("text", ["", "# only a comment\n\n   \n"])
def test_read_class_list_rejects_an_empty_list(tmp_path, text):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(BioattnError, match="names no class"):
        read_class_list(path)


def test_read_class_list_missing_or_binary_file(tmp_path):
    with pytest.raises(BioattnError, match="cannot read class list .*nope.txt"):
        read_class_list(tmp_path / "nope.txt")
    with pytest.raises(BioattnError, match="cannot read class list"):
        read_class_list(tmp_path)                       # a folder
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00n01")
    with pytest.raises(BioattnError, match="is not UTF-8 text"):
        read_class_list(tmp_path / "bin.txt")


def test_example_imagenet100_list():
    names = read_class_list(EXAMPLE)
    wnids = imagenet_wnids()
    assert len(names) == 100 and len(set(names)) == 100
    assert names == [wnids[i] for i in range(0, 1000, 10)]


# ------------------------------------------------------------------------------------------
# ImageFolderDataset(subset=...)
# ------------------------------------------------------------------------------------------
def test_subset_reads_only_the_listed_classes(folder):
    ds = ImageFolderDataset(folder, subset=["n03", "n01"])
    assert ds.classes == ["n01", "n03"] and ds.num_classes == 2    # sorted, as a folder of just those
    assert len(ds) == 5
    names = sorted((Path(p).parent.name, t) for p, t in ds.samples)
    assert names == [("n01", 0)] * 2 + [("n03", 1)] * 3


def test_subset_from_a_file(folder, tmp_path):
    path = tmp_path / "subset.txt"
    path.write_text("n02\nn04  # two classes\n")
    ds = ImageFolderDataset(folder, subset=read_class_list(path))
    assert ds.classes == ["n02", "n04"] and sorted(ds.targets) == [0, 1]


def test_subset_with_the_training_class_order(folder, tmp_path):
    """Validation reads the same subset with the training split's classes (labels agree)."""
    val = _folder(tmp_path / "val", {"n01": 1, "n02": 1, "n03": 1, "n04": 1, "n05": 1})
    train = ImageFolderDataset(folder, subset=["n04", "n02"])
    ds = ImageFolderDataset(val, classes=train.classes, subset=["n02", "n04"])
    assert ds.classes == ["n02", "n04"]
    assert sorted((Path(p).parent.name, t) for p, t in ds.samples) == [("n02", 0), ("n04", 1)]
    # a longer label space (e.g. the 1000 ImageNet classes): only the subset's folders are read
    wide = ImageFolderDataset(val, classes=["n01", "n02", "n03", "n04", "n05"], subset=["n03"])
    assert [(Path(p).parent.name, t) for p, t in wide.samples] == [("n03", 2)]


def test_subset_naming_a_missing_class(folder):
    with pytest.raises(BioattnError, match=r"train lacks 2 of the 3 listed classes: n09, n07$"):
        ImageFolderDataset(folder, subset=["n01", "n09", "n07"])


def test_subset_ignores_an_empty_folder_outside_it(folder):
    (folder / "n00").mkdir()
    with pytest.raises(BioattnError, match="empty class folder"):
        ImageFolderDataset(folder)
    assert ImageFolderDataset(folder, subset=["n01"]).classes == ["n01"]


def test_subset_duplicates_and_empty(folder):
    with pytest.raises(BioattnError, match="names some classes twice: n01$"):
        ImageFolderDataset(folder, subset=["n01", "n02", "n01"])
    with pytest.raises(BioattnError, match="empty class subset"):
        ImageFolderDataset(folder, subset=[])


def test_without_subset_nothing_changes(folder):
    ds = ImageFolderDataset(folder)
    assert ds.classes == ["n01", "n02", "n03", "n04"] and len(ds) == 7
    with pytest.raises(BioattnError, match="class folders the training split lacks: n03, n04"):
        ImageFolderDataset(folder, classes=["n01", "n02"])
