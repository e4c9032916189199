"""Training normalises with ``data.clip_percentiles``; runs started before it existed keep the legacy 0.5-99.5."""

from __future__ import annotations

from pathlib import Path

import yaml

from plkd.normalise import CLIP_PERCENTILES, LEGACY_CLIP_PERCENTILES
from plkd.training.config import dump_config, load_config, set_value
from plkd.training.distributed import DistInfo
from plkd.training.pipeline import _check_config, _keep_legacy_settings, _saved_config


def _saved_before_the_option(run: Path, cfg: dict) -> None:
    old = yaml.safe_load(dump_config(cfg))
    del old["data"]["clip_percentiles"]
    (run / "config.yaml").write_text(yaml.safe_dump(old), encoding="utf-8")


def test_new_runs_leave_the_dark_end_unclipped():
    assert tuple(load_config(None)["data"]["clip_percentiles"]) == CLIP_PERCENTILES == (0.0, 99.5)


def test_a_run_started_before_the_option_resumes_with_the_legacy_percentiles(tmp_path: Path, caplog) -> None:
    cfg = load_config("tiny")
    _saved_before_the_option(tmp_path, cfg)
    kept = _keep_legacy_settings(tmp_path, _saved_config(tmp_path), cfg)
    assert tuple(kept["data"]["clip_percentiles"]) == LEGACY_CLIP_PERCENTILES
    assert tuple(cfg["data"]["clip_percentiles"]) == CLIP_PERCENTILES  # the caller's copy is untouched
    with caplog.at_level("WARNING"):
        assert _check_config(tmp_path, kept, DistInfo(), _saved_config(tmp_path)) == []
    assert "other settings" not in caplog.text
    # Saved now with the key, the next resume keeps it as recorded.
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text(encoding="utf-8"))
    assert tuple(saved["data"]["clip_percentiles"]) == LEGACY_CLIP_PERCENTILES


def test_percentiles_asked_for_on_resume_are_used_and_said(tmp_path: Path, caplog) -> None:
    cfg = set_value(load_config("tiny"), "data.clip_percentiles", "[0.1, 99.0]")
    _saved_before_the_option(tmp_path, load_config("tiny"))
    assert _keep_legacy_settings(tmp_path, _saved_config(tmp_path), cfg) is cfg
    with caplog.at_level("WARNING"):
        assert _check_config(tmp_path, cfg, DistInfo(), _saved_config(tmp_path)) == ["data"]


def test_a_fresh_run_keeps_the_configured_percentiles(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    assert _keep_legacy_settings(tmp_path, _saved_config(tmp_path), cfg) is cfg
