"""Which sub-folders of a watched folder the checkpoint watcher takes: complete checkpoints, in training order."""

import numpy as np
import pytest
from attn_audit.tasks.checkpoints import checkpoint_folders
from safetensors.numpy import save_file


def checkpoint(folder, name, config=True):
    path = folder / name
    path.mkdir()
    save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8)}, path / "model.safetensors")
    if config:
        (path / "config.json").write_text("{}")
    return path


def test_complete_checkpoints_in_natural_name_order(tmp_path):
    for name in ("step-10", "step-9", "step-100"):
        checkpoint(tmp_path, name)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step-9", "step-10", "step-100"]


def test_half_written_hidden_and_unconfigured_folders_are_left_for_later(tmp_path):
    checkpoint(tmp_path, "ok")
    checkpoint(tmp_path, ".staging")  # written here, then renamed into view
    checkpoint(tmp_path, "no-config", config=False)
    cut = checkpoint(tmp_path, "being-copied") / "model.safetensors"
    cut.write_bytes(cut.read_bytes()[:-10])
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder")
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["ok"]


def test_a_missing_watched_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        checkpoint_folders(tmp_path / "missing")
