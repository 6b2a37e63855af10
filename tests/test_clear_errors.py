"""Bad input is one clear line naming the file: a params file that is a folder or binary, a
safetensors write on a full disk."""

from __future__ import annotations

import pytest
import torch
from safetensors import SafetensorError

import pruneflow.io as io
from pruneflow import config
from pruneflow.errors import PruneflowError


def test_a_params_file_that_is_a_folder_or_binary_is_one_error(tmp_path):
    with pytest.raises(PruneflowError, match="is a folder"):
        config.load(tmp_path)
    binary = tmp_path / "params.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(PruneflowError, match="not readable YAML text"):
        config.load(binary)


def test_a_safetensors_write_on_a_full_disk_names_the_file_and_leaves_nothing(
    tmp_path, monkeypatch
):
    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(io, "save_file", full_disk)
    target = tmp_path / "model.safetensors"
    with pytest.raises(PruneflowError, match=r"cannot write .*model\.safetensors.*No space"):
        io.save_tensors(target, {"w": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []
