"""Per-image records: stored compactly and read back exactly; the manifest's digests catch an
altered, missing or added record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bioattn.errors import BioattnError
from bioattn.results.records import MANIFEST, Record, parse_record, read_records, record_text, write_records


def _record(entry: str = "rvt_micro", seed: int = 0) -> Record:
    rng = np.random.default_rng(seed)
    record = Record(entry, seed, meta={"trained_glimpses": 4})
    record.add("clean", rng.random(1000) < 0.9, range(0, 2000, 2))
    record.add("clean/glimpse", rng.random((16, 1000)) < 0.8)
    record.add("attention/auc", rng.random(300).astype(np.float32), range(300))
    record.add("segmentation/intersection", rng.integers(0, 4096, (11, 50)).astype(np.uint32), range(50))
    return record


def test_a_record_reads_back_exactly_and_compactly():
    record = _record()
    text = record_text(record)
    back = parse_record(text, "x")
    assert back.entry == "rvt_micro" and back.seed == 0 and back.meta == {"trained_glimpses": 4}
    for name, values in record.conditions.items():
        assert back.get(name).dtype == values.dtype and np.array_equal(back.get(name), values)
    assert np.array_equal(back.images_of("clean/glimpse"), np.arange(0, 2000, 2))
    # 17,000 outcomes as bits: a few kilobytes
    assert len(text) < 8000 + 300 * 6 + 550 * 6
    assert record_text(back) == text


def test_a_condition_must_match_its_images():
    record = Record("rvt_micro", 0)
    with pytest.raises(BioattnError, match="no image indices"):
        record.add("clean", np.ones(3, bool))
    record.add("clean", np.ones(3, bool), [0, 1, 2])
    with pytest.raises(BioattnError, match="4 images|for 3 images"):
        record.add("clean/glimpse", np.ones((2, 4), bool))
    with pytest.raises(BioattnError, match="holds no condition pgd"):
        record.get("pgd")


def test_the_record_set_is_written_whole_and_keeps_other_entries(tmp_path):
    folder = tmp_path / "records"
    write_records(folder, [_record("rvt_micro"), _record("rvt_micro_vars_d")])
    write_records(folder, [_record("rvt_micro", seed=1)])
    records = read_records(folder)
    assert sorted(records) == [("rvt_micro", 0), ("rvt_micro", 1), ("rvt_micro_vars_d", 0)]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert sorted(manifest["records"]) == ["rvt_micro.seed0.json", "rvt_micro.seed1.json",
                                           "rvt_micro_vars_d.seed0.json"]
    assert not list(tmp_path.glob(".records.*")) and not (tmp_path / "records.old").exists()


def test_an_altered_missing_or_added_record_is_named(tmp_path):
    folder = tmp_path / "records"
    write_records(folder, [_record("rvt_micro"), _record("rvt_micro_vars_d")])
    path = folder / "rvt_micro.seed0.json"
    text = path.read_text()
    data = json.loads(text)
    data["meta"]["trained_glimpses"] = 8
    path.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n")
    with pytest.raises(BioattnError, match=r"record .*rvt_micro\.seed0\.json was altered"):
        read_records(folder)
    # keeping the other records while writing new ones checks them too
    with pytest.raises(BioattnError, match="was altered"):
        write_records(folder, [_record("rvt_micro_vars_d", seed=1)])
    path.write_text(text)
    assert len(read_records(folder)) == 2
    (folder / "rvt_micro.seed7.json").write_text(text)
    with pytest.raises(BioattnError, match=r"rvt_micro\.seed7\.json is not in the manifest"):
        read_records(folder)
    (folder / "rvt_micro.seed7.json").unlink()
    path.unlink()
    with pytest.raises(BioattnError, match=r"rvt_micro\.seed0\.json is missing"):
        read_records(folder)
    with pytest.raises(BioattnError, match="manifest.json is missing"):
        read_records(tmp_path)


def test_a_folder_the_records_did_not_come_from_is_refused(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    with pytest.raises(BioattnError, match="holds files but no manifest.json"):
        write_records(folder, [_record()])
    assert (folder / "notes.txt").read_text() == "mine\n"
