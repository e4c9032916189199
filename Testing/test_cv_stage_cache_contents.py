"""plkd cv's stage cache is keyed by the training files' names and sizes: a label re-drawn in an uncompressed
.nii (or a brain mask replaced by one of the same size) kept the key, and a fold copied a screening or teacher stage
trained on the old files. Each cache entry now records the files' contents and is reused only while they hold."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.data.datasets import find_subjects
from plkd.errors import PLKDError
from plkd.training.checkpoint import DONE_NAME, FINAL_NAME
from plkd.training.crossval import (
    _check_same_fold,
    _Fold,
    _reuse_stages,
    _store_stages,
    data_contents,
    data_fingerprint,
    file_contents,
)
from plkd.training.loop import LOG_NAME

IDS = ["s01", "s02"]


def _data(root: Path) -> Path:
    for sid in IDS:
        root.mkdir(parents=True, exist_ok=True)
        image = np.random.default_rng(len(sid)).random((8, 8, 6)).astype(np.float32)
        label = np.zeros((8, 8, 6), np.uint8)
        label[2, 2, 2] = 1
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / f"{sid}.nii"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / f"{sid}_label.nii"))
    return root


def _contents(root: Path) -> str:
    return data_contents(file_contents(find_subjects(root)), IDS)


def _move_a_microbleed(root: Path) -> None:
    """The researcher moves a microbleed in s02's label: same name, same size, other voxels."""
    path = root / "s02_label.nii"
    img = nib.load(str(path))
    label = np.zeros(img.shape, np.uint8)
    label[5, 5, 3] = 1
    nib.save(nib.Nifti1Image(label, img.affine), str(path))


def _finished_stage(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name in (DONE_NAME, FINAL_NAME, LOG_NAME):
        (folder / name).write_text("x")


def test_a_cached_stage_of_other_file_contents_is_trained_again(tmp_path: Path, caplog) -> None:
    root, cache = _data(tmp_path / "data"), tmp_path / "cache"
    keys = {"screening": "k1"}
    first = tmp_path / "fold-1" / "run"
    _finished_stage(first / "screening")
    _store_stages(first, cache, keys, _contents(root))
    # The same files again: reused.
    assert _reuse_stages(tmp_path / "fold-2" / "run", cache, keys, _contents(root)) == ["screening"]

    fingerprint = data_fingerprint(root, IDS)
    _move_a_microbleed(root)
    assert data_fingerprint(root, IDS) == fingerprint  # the cache key cannot tell
    contents = _contents(root)
    with caplog.at_level(logging.WARNING):
        assert _reuse_stages(tmp_path / "fold-3" / "run", cache, keys, contents) == []
    assert "trained on other contents of the same files" in caplog.text
    assert not (tmp_path / "fold-3" / "run" / "screening").exists()
    # The stage trained anew replaces the entry, which the next fold then reuses.
    _finished_stage(tmp_path / "fold-3" / "run" / "screening")
    _store_stages(tmp_path / "fold-3" / "run", cache, keys, contents)
    assert _reuse_stages(tmp_path / "fold-4" / "run", cache, keys, contents) == ["screening"]


def test_a_cache_entry_stored_before_contents_were_recorded_is_reused(tmp_path: Path) -> None:
    root, cache = _data(tmp_path / "data"), tmp_path / "cache"
    _finished_stage(cache / "screening-k1")
    assert _reuse_stages(tmp_path / "run", cache, {"screening": "k1"}, _contents(root)) == ["screening"]


def test_a_finished_fold_of_other_file_contents_is_refused_on_resume(tmp_path: Path) -> None:
    # A fold scored on the old label stood in the summary beside folds scored on the new one.
    root = _data(tmp_path / "data")
    fold = _Fold(tmp_path / "fold-1", ["s01"], ["s02"])
    previous = {"train_ids": ["s01"], "test_ids": ["s02"], "data_contents": _contents(root)}
    _check_same_fold(fold, previous, _contents(root))  # unchanged: resumed
    _move_a_microbleed(root)
    with pytest.raises(PLKDError, match="other contents of its subjects' image, label or mask files") as err:
        _check_same_fold(fold, previous, _contents(root))
    assert "\n" not in str(err.value)
    del previous["data_contents"]  # a fold finished before the contents were recorded: not checked for them
    _check_same_fold(fold, previous, _contents(root))


def test_a_stage_copy_interrupted_halfway_is_not_taken_as_finished(tmp_path: Path, monkeypatch) -> None:
    """A finished stage was copied from the cache straight into the fold's run: Ctrl-C (or a kill) after done.json and
    the log but before the weights were complete left a folder taken as finished, whose truncated model.pt the fold's
    export then failed to read. It is now copied under a temporary name and renamed once complete."""
    from plkd.training import crossval
    from plkd.training.loop import is_done

    cache = tmp_path / "cache"
    _finished_stage(tmp_path / "fold-1" / "run" / "screening")
    _store_stages(tmp_path / "fold-1" / "run", cache, {"screening": "k1"})
    real = crossval.shutil.copytree

    def killed(src: Path, dst: Path, **kwargs) -> None:
        Path(dst).mkdir(parents=True, exist_ok=True)
        for name in (DONE_NAME, LOG_NAME):
            (Path(dst) / name).write_text("x")
        (Path(dst) / FINAL_NAME).write_text("")  # half written
        raise KeyboardInterrupt

    run = tmp_path / "fold-2" / "run"
    monkeypatch.setattr(crossval.shutil, "copytree", killed)
    with pytest.raises(KeyboardInterrupt):
        _reuse_stages(run, cache, {"screening": "k1"})
    monkeypatch.setattr(crossval.shutil, "copytree", real)
    assert not is_done(run / "screening")
    assert _reuse_stages(run, cache, {"screening": "k1"}) == ["screening"] and is_done(run / "screening")
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
