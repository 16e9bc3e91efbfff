"""Atomic writes: a failed write leaves the previous file or checkpoint directory whole, and says
so in one line."""

import errno

import pytest
import torch
from torch import nn

from bioattn import checkpoint as ckpt
from bioattn.errors import BioattnError
from bioattn.fileio import atomic_dir, atomic_write, atomic_write_text


class Small(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = nn.Linear(3, width)
        self.out = nn.Linear(width, 2)


def test_atomic_write_keeps_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def failing(tmp):
        with open(tmp, "w") as fh:
            fh.write("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(BioattnError, match="No space left on device; the previous copy is intact"):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_dir_replaces_whole_checkpoint_and_survives_a_failed_fill(tmp_path):
    model = Small()
    ckpt.save_checkpoint(tmp_path / "last", model, {"model": "small"})
    before = ckpt.read_state_dict(tmp_path / "last")

    def failing(tmp):
        (tmp / ckpt.WEIGHTS).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(BioattnError, match="No space left on device; the previous copy is intact"):
        atomic_dir(tmp_path / "last", failing)
    after = ckpt.read_state_dict(tmp_path / "last")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
