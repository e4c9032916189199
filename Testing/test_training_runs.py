"""Trainers end to end on a tiny data set: learning, exact resume, PLKD stages, frozen teacher, export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from training_toydata import write_toy_dataset

from plkd.bundle import load_bundle
from plkd.cli import main
from plkd.data.datasets import find_subjects
from plkd.errors import PLKDError
from plkd.training.checkpoint import load_weights
from plkd.training.config import load_config, set_value
from plkd.training.data import load_training_data
from plkd.training.export import export_run
from plkd.training.loop import StageSpec, TrainContext, run_stage
from plkd.training.pipeline import make_context, train
from plkd.training.sampling import SubjectArrays
from plkd.training.screening import mine_hard_negatives, screening_false_positives
from plkd.training.segmentation import _loss as teacher_loss
from plkd.training.segmentation import build_segmenter
from plkd.training.students import factor_chain, load_teacher, plan_stages, state_checksum
from plkd.tuning import refuse_training_scans

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_subjects=3)


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory) -> Path:
    """``plkd train all`` with the tiny configuration (a few steps per stage), one subject for validation."""
    run = tmp_path_factory.mktemp("run") / "run"
    validation = ["data.val_fraction=0.34", "screening.val_every=2", "teacher.val_every=2", "students.val_every=2"]
    args = ["train", "all", "--data", str(data_root), "--out", str(run), "--config", "tiny", "--progress", "none"]
    assert main(args + [f"--set={s}" for s in validation]) == 0
    return run


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(data_root, tmp_path):
    cfg = load_config("tiny")
    data = load_training_data(data_root, set_value(cfg, "sampling.positive_fraction", "1.0"))
    batch = data.sampler.segmentation_batch(np.random.default_rng(0), 4)
    torch.manual_seed(0)
    net = build_segmenter(cfg)
    ctx = TrainContext(device=torch.device("cpu"))
    x = {k: torch.from_numpy(v) for k, v in batch.items()}
    before = float(teacher_loss(net, x)[0].detach())
    spec = StageSpec(
        "fit", tmp_path / "fit", net, steps=15, lr=0.01, batch_fn=lambda rng: batch, loss_fn=teacher_loss, salt=1
    )
    run_stage(spec, ctx)
    after = float(teacher_loss(net, x)[0].detach())
    assert after < before - 0.02, (before, after)


def test_resume_equals_an_uninterrupted_run(data_root, tmp_path):
    cfg = set_value(set_value(load_config("tiny"), "teacher.steps", "6"), "teacher.checkpoint_every", "100")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train("teacher", data_root, straight, cfg, make_context(cfg, progress="none"))
    with pytest.raises(KeyboardInterrupt):
        train("teacher", data_root, resumed, cfg, make_context(cfg, progress="none", stop_after=3))
    assert not (resumed / "teacher" / "done.json").exists()
    assert torch.load(resumed / "teacher" / "checkpoint.pt", weights_only=True)["step"] == 3
    train("teacher", data_root, resumed, cfg, make_context(cfg, progress="none"))
    a, b = load_weights(straight / "teacher" / "model.pt"), load_weights(resumed / "teacher" / "model.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    def rows(run: Path) -> list[str]:  # the log without its wall-clock column
        return [line.rsplit(",", 1)[0] for line in (run / "teacher" / "log.csv").read_text().splitlines()]

    assert rows(resumed) == rows(straight)
    assert len(rows(resumed)) == 7  # header + one row per step, none duplicated by the resume


@pytest.mark.parametrize("steps", [2, 8])
def test_a_stage_resumed_with_other_settings_trains_and_records_what_it_says(data_root, tmp_path, caplog, steps):
    """A started stage resumed with another step count or learning rate: the learning rate given was silently not used
    (the checkpoint's optimiser put the old one back) while config.yaml recorded it, and a step count below the step
    reached finished the stage with done.json (and the bundle) saying 2 steps for a network trained 4. The new values
    now apply from the step reached, the warning names the stage, step and values, and done.json records them."""
    from plkd.training.loop import warmup_cosine

    cfg = set_value(set_value(load_config("tiny"), "teacher.steps", "6"), "teacher.checkpoint_every", "100")
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train("teacher", data_root, run, cfg, make_context(cfg, progress="none", stop_after=4))
    other = set_value(set_value(cfg, "teacher.steps", str(steps)), "teacher.lr", "0.01")
    with caplog.at_level("WARNING"):
        train("teacher", data_root, run, other, make_context(other, progress="none"))
    said = [r.getMessage() for r in caplog.records if "teacher: resumed at step 4" in r.getMessage()]
    assert len(said) == 1 and f"steps {steps} (was 6)" in said[0] and "lr 0.01 (was 0.001)" in said[0]
    done = json.loads((run / "teacher" / "done.json").read_text())
    assert done["steps"] == max(4, steps)  # the steps the network was trained for
    assert done["resumed_with_other_settings"] == [
        {"at_step": 4, "changed": {"steps": [6, steps], "lr": [0.001, 0.01]}}
    ]
    rows = [line.split(",") for line in (run / "teacher" / "log.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == list(range(1, max(4, steps) + 1))
    lr = [float(r[-2]) for r in rows[4:]]  # the steps after the resume ran with the learning rate given
    assert lr == pytest.approx([0.01 * warmup_cosine(0, steps)(s) for s in range(4, steps)], rel=1e-5)
    assert export_run(run_with_screening(run, data_root, other), tmp_path / "b", students=[]).is_dir()
    record = json.loads((tmp_path / "b" / "manifest.json").read_text())["training"]["stages"]["teacher"]
    assert record["resumed_with_other_settings"] == done["resumed_with_other_settings"]


def test_a_stage_resumed_with_another_network_is_refused_in_one_line(data_root, tmp_path):
    """Another architecture for a started stage failed with torch's many-line size-mismatch traceback."""
    cfg = set_value(set_value(load_config("tiny"), "teacher.steps", "4"), "teacher.checkpoint_every", "100")
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train("teacher", data_root, run, cfg, make_context(cfg, progress="none", stop_after=2))
    wider = set_value(cfg, "networks.segmenter.hparams.base_channels", "8")
    with pytest.raises(PLKDError, match="was started with another network"):
        train("teacher", data_root, run, wider, make_context(wider, progress="none"))
    assert torch.load(run / "teacher" / "checkpoint.pt", weights_only=True)["step"] == 2  # kept


def run_with_screening(run: Path, data_root: Path, cfg) -> Path:
    """``run`` with a finished screening stage (what plkd export needs beside the teacher)."""
    train("screening", data_root, run, cfg, make_context(cfg, progress="none"))
    return run


def test_batch_workers_and_parallel_loading_give_the_same_weights(data_root, tmp_path):
    # workers > 0 draws the coming batches (and loads subjects) in forked processes: throughput only.
    cfg = set_value(load_config("tiny"), "teacher.steps", "5")
    with_workers = set_value(cfg, "workers", "2")
    train("teacher", data_root, tmp_path / "serial", cfg, make_context(cfg, progress="none"))
    ctx = make_context(with_workers, progress="none")
    assert ctx.workers == 2
    with pytest.raises(KeyboardInterrupt):  # a resume mid-run starts the worker stream at the right step
        train("teacher", data_root, tmp_path / "pool", with_workers, make_context(with_workers, "none", stop_after=2))
    train("teacher", data_root, tmp_path / "pool", with_workers, ctx)
    a = load_weights(tmp_path / "serial" / "teacher" / "model.pt")
    b = load_weights(tmp_path / "pool" / "teacher" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_plkd_stage_order_and_initialisation(full_run):
    names = [p.name for p in sorted((full_run / "students").iterdir())]
    assert sorted(names) == ["finetune", "x2", "x4", "x8"]
    assert factor_chain(8) == [2, 4, 8] and factor_chain(2) == [2]
    chain = ["x2", "x4", "x8", "finetune"]
    done = {n: json.loads((full_run / "students" / n / "done.json").read_text()) for n in chain}
    assert [done[n]["lr_factor"] for n in chain] == [2, 4, 8, 8]
    # The first student starts from the teacher, every later stage from the previous stage's result.
    assert done["x2"]["init_sha256"] == state_checksum(load_weights(full_run / "teacher" / "model.pt"))
    for prev, cur in zip(chain, chain[1:], strict=False):
        assert done[cur]["init_sha256"] == state_checksum(load_weights(full_run / "students" / prev / "model.pt"))
        assert done[cur]["init_from"].endswith(prev)
    assert done["finetune"]["distill"] is False and done["x4"]["distill"] is True
    for n in chain:  # logs and curves per stage
        assert (full_run / "students" / n / "curve.png").stat().st_size > 1000
        assert (full_run / "students" / n / "log.csv").read_text().startswith("step,loss,dice,distill")
    assert (full_run / "config.yaml").is_file()


def test_baseline_modes_plan(full_run):
    cfg = load_config("tiny")
    assert [s.name for s in plan_stages(set_value(cfg, "students.mode", "kd"), "T2S")] == ["x8"]
    none = plan_stages(set_value(cfg, "students.mode", "none"), "T2S")
    assert len(none) == 1 and not none[0].distill and none[0].steps == 2 * 3 + 2  # the PLKD budget


def test_teacher_frozen_during_student_training(data_root, full_run, tmp_path):
    before = load_weights(full_run / "teacher" / "model.pt")
    teacher, _ = load_teacher(full_run / "teacher", torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    cfg = set_value(load_config("tiny"), "students.mode", "kd")
    out = train("students", data_root, full_run, cfg, make_context(cfg, progress="none"))
    assert list(out["students"]) == ["x8"]
    after = load_weights(full_run / "teacher" / "model.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (full_run / "students-kd" / "x8" / "done.json").is_file()


def test_finished_run_is_skipped(data_root, full_run, capsys):
    stamp = (full_run / "teacher" / "model.pt").stat().st_mtime_ns
    assert (
        main(
            ["train", "all", "--data", str(data_root), "--out", str(full_run), "--config", "tiny", "--progress", "none"]
        )
        == 0
    )
    assert (full_run / "teacher" / "model.pt").stat().st_mtime_ns == stamp


def test_export_round_trip(full_run, tmp_path):
    out = tmp_path / "bundle"
    assert main(["export", str(full_run), "--out", str(out), "--fp32"]) == 0
    bundle = load_bundle(out)
    man = json.loads((out / "manifest.json").read_text())
    assert set(man["networks"]) == {"screening", "teacher", "student_x2", "student_x4", "student_x8"}
    assert man["networks"]["student_x8"]["stage"] == "finetune"
    assert man["networks"]["teacher"]["lr_factor"] == 1
    assert man["patch_size"]["segmentation"] == [16, 16, 8]
    assert man["disclaimer"] == "Trained on synthetic data; not a medical device."
    assert man["training"]["n_train_subjects"] == 3
    net = bundle.network("student_x4")
    ref = load_weights(full_run / "students" / "x4" / "model.pt")
    assert all(torch.equal(net.state_dict()[k].float(), ref[k].float()) for k in ref)
    with pytest.raises(PLKDError, match="both have LR factor 8"):
        export_run(full_run, tmp_path / "b2", students=["x8", "finetune"])
    assert main(["export", str(full_run / "nope"), "--out", str(tmp_path / "b3")]) == 2


def test_fine_tuning_starts_every_stage_from_a_bundle(data_root, full_run, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert main(["export", str(full_run), "--out", str(bundle), "--fp32"]) == 0
    run = tmp_path / "ft"
    # A configuration asking for another segmenter width: the run adopts the bundle's architecture.
    # One step at a vanishing learning rate leaves every stage at the weights it started from.
    args = ["train", "all", "--data", str(data_root), "--out", str(run), "--config", "tiny", "--progress", "none"]
    args += ["--init-from", str(bundle), "--set", "networks.segmenter.hparams.base_channels=6"]
    for stage in ("screening", "teacher"):
        args += ["--set", f"{stage}.steps=1", "--set", f"{stage}.lr=1e-12"]
    args += [
        "--set",
        "students.stage_steps=1",
        "--set",
        "students.finetune.enabled=false",
        "--set",
        "students.lr=1e-12",
    ]
    assert main(args) == 0
    started = load_bundle(bundle)
    for stage, network in (("screening", "screening"), ("teacher", "teacher"), ("students/x4", "student_x4")):
        done = json.loads((run / stage / "done.json").read_text())
        assert done["init_from"] == f"{started.name}:{network}"
        assert done["network"]["hparams"]["base_channels" if network != "screening" else "width"] == 4
        # Parameters, not batch-norm running statistics (those move with every training batch).
        mine, theirs = load_weights(run / stage / "model.pt"), dict(started.network(network).named_parameters())
        differ = [k for k in theirs if not torch.allclose(mine[k].float(), theirs[k].float(), atol=1e-6)]
        assert not differ, (stage, differ)
    # Exported, the fine-tuned bundle says where it started.
    assert main(["export", str(run), "--out", str(tmp_path / "ft-bundle")]) == 0
    man = json.loads((tmp_path / "ft-bundle" / "manifest.json").read_text())
    assert man["training"]["init_from"] == {"name": started.name, "manifest_sha256": started.manifest_sha256}
    assert man["training"]["stages"]["teacher"]["init_from"] == f"{started.name}:teacher"
    # A path that is not a bundle is one clear line before any training.
    capsys.readouterr()
    bad = ["train", "all", "--data", str(data_root), "--out", str(tmp_path / "bad"), "--config", "tiny"]
    assert main([*bad, "--init-from", str(tmp_path / "nope")]) == 2
    assert "plkd: error: init_from: no such bundle" in capsys.readouterr().err


class _ScoresOutsideTheBrain(torch.nn.Module):
    """A stand-in screening network that scores highest where the image is 0 (outside the brain),
    as the real FCN does on the dark rim around a skull-stripped brain, and ranks dark spots inside."""

    output_stride = (1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x == 0, torch.full_like(x, 9.0), -x)


def test_mined_false_positives_are_the_strongest_peaks_inside_the_brain(data_root):
    data = load_training_data(data_root, load_config("tiny"))
    subject = data.sampler.subjects[0]
    mask = np.zeros_like(subject.mask)
    mask[4:-4, 4:-4, 3:-3] = True
    tissue = np.where(subject.image == 0, 0.5, subject.image)  # no exact zeros inside the brain
    image = np.where(mask, tissue, 0.0).astype(np.float32)
    brain = SubjectArrays(subject.id, image, subject.label, mask, subject.affine)
    peaks = screening_false_positives(_ScoresOutsideTheBrain(), brain, 10, torch.device("cpu"))
    assert len(peaks) == 10 and mask[tuple(peaks.T)].all()
    # The darkest local minimum of the brain comes first.
    darkest = min(image[tuple(p)] for p in np.argwhere(mask))
    assert image[tuple(peaks[0])] == darkest


def test_screening_fine_tune_mines_the_starting_networks_false_positives(data_root, full_run, tmp_path):
    bundle = tmp_path / "bundle"
    assert main(["export", str(full_run), "--out", str(bundle), "--fp32"]) == 0
    # What the starting network proposes away from the microbleeds, counted directly.
    cfg = set_value(load_config("tiny"), "sampling.screening_candidates", "5")
    data = load_training_data(data_root, cfg)
    expected = mine_hard_negatives(load_bundle(bundle).network("screening"), data, 5, torch.device("cpu"))
    assert expected > 0
    args = ["train", "screening", "--data", str(data_root), "--config", "tiny", "--progress", "none"]
    args += ["--init-from", str(bundle), "--set", "screening.steps=1", "--set", "sampling.screening_candidates=5"]
    assert main([*args, "--out", str(tmp_path / "mined"), "--set", "screening.mine_init=true"]) == 0
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    done = json.loads((tmp_path / "mined" / "screening" / "done.json").read_text())
    assert done["mined_from_init"] == expected
    assert "mined_from_init" not in json.loads((tmp_path / "plain" / "screening" / "done.json").read_text())
    # Later stages draw from the pool as it was: a run that stops after the screening stage and
    # resumes for the teacher equals one that trains both in one go.
    both = ["train", "all", "--data", str(data_root), "--config", "tiny", "--progress", "none", "--init-from"]
    both += [str(bundle), "--set", "screening.steps=1", "--set", "sampling.screening_candidates=5"]
    both += ["--set", "screening.mine_init=true", "--set", "teacher.steps=2", "--set", "students.target_factor=2"]
    both += ["--set", "students.stage_steps=1", "--set", "students.finetune.enabled=false"]
    # Every later patch from the hard-negative pool, so a different pool shows in the weights.
    both += ["--set", "sampling.positive_fraction=0", "--set", "sampling.hard_negative_fraction=1"]
    both += ["--set", "sampling.mimic_share=1"]
    assert main([*both, "--out", str(tmp_path / "one-go")]) == 0
    staged = ["train", "screening", *both[2:], "--out", str(tmp_path / "staged")]
    assert main(staged) == 0
    assert main([*both, "--out", str(tmp_path / "staged")]) == 0
    for stage in ("teacher", "students/x2"):
        a = load_weights(tmp_path / "one-go" / stage / "model.pt")
        b = load_weights(tmp_path / "staged" / stage / "model.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), stage


def test_cv_two_folds(tmp_path, capsys):
    data = write_toy_dataset(tmp_path / "data", n_subjects=4, seed=3)
    out = tmp_path / "cv"
    args = [
        "cv",
        "--data",
        str(data),
        "--out",
        str(out),
        "--config",
        "tiny",
        "--folds",
        "2",
        "--factor",
        "2",
        "--progress",
        "none",
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["folds"]) == 2 and set(summary["mean"]) == {"TPR", "PPV", "FPavg", "F1", "Dice", "S@1FP"}
    assert (out / "froc.png").stat().st_size > 1000 and "| mean ± sd |" in (out / "summary.md").read_text()
    folds = [json.loads((out / f"fold-{i}" / "result.json").read_text()) for i in (1, 2)]
    assert sorted(folds[0]["test_ids"] + folds[1]["test_ids"]) == [f"sub-000{i}" for i in range(1, 5)]
    assert not set(folds[0]["test_ids"]) & set(folds[0]["train_ids"])
    assert folds[0]["student"] == "student_x2"
    assert folds[0]["thresholds"] == {"screening": 0.5, "segmentation": 0.5}  # the bundle's, untuned
    stamp = (out / "fold-1" / "result.json").stat().st_mtime_ns
    assert main(args) == 0  # resumable: finished folds are skipped
    assert (out / "fold-1" / "result.json").stat().st_mtime_ns == stamp
    # Tuning afterwards re-scores the finished folds from their bundles, without training again.
    val = write_toy_dataset(tmp_path / "val", n_subjects=2, seed=17)
    weights = (out / "fold-1" / "run" / "students" / "x2" / "model.pt").stat().st_mtime_ns
    assert main([*args, "--tune-data", str(val)]) == 0
    assert (out / "fold-1" / "run" / "students" / "x2" / "model.pt").stat().st_mtime_ns == weights
    tuned = json.loads((out / "fold-1" / "result.json").read_text())
    assert tuned["tuning"]["data"] == str(val.resolve()) and tuned["tuning"]["conditions"] == ["interp"]
    assert tuned["thresholds"] == {k: tuned["tuning"][k] for k in ("screening", "segmentation")}
    assert tuned["tuning"]["inputs"] == 2  # two validation subjects at LR@2, none of the test fold
    own = load_bundle(out / "fold-1" / "bundle-tuned").manifest["networks"]["student_x2"]["thresholds"]
    assert own == tuned["thresholds"]
    assert "tuned on" in (out / "summary.md").read_text()
    stamp = (out / "fold-1" / "result.json").stat().st_mtime_ns
    assert main([*args, "--tune-data", str(val)]) == 0  # already tuned on these data: skipped
    assert (out / "fold-1" / "result.json").stat().st_mtime_ns == stamp
    assert main([*args, "--tune-data", str(data)]) == 2  # never on the cross-validated subjects
    # ... nor on a copy of one under another name (every subject is tested by some fold)
    capsys.readouterr()
    copy = _renamed_copy(data / "sub-0003", tmp_path / "val-copy", "scan9")
    assert main([*args, "--tune-data", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "plkd: error: --tune-data: 1 of 1 subjects (scan9 = cross-validated subject sub-0003)" in err


def test_cv_variants_share_stages(tmp_path):
    data = write_toy_dataset(tmp_path / "data", n_subjects=4, seed=5)
    out = tmp_path / "abl"
    variants = "hybrid_fcm,hybrid_fcm_kd,hybrid_fcm_plkd"
    args = ["cv", "--data", str(data), "--out", str(out), "--config", "tiny", "--folds", "2", "--factor", "2"]
    assert main(args + ["--variants", variants, "--progress", "none"]) == 0
    fold = {v: json.loads((out / v / "fold-1" / "result.json").read_text()) for v in variants.split(",")}
    # The first variant trains the screening network, the KD variant reuses it and trains the
    # teacher, PLKD reuses both: identical settings give identical stages, trained once.
    assert fold["hybrid_fcm"]["reused_stages"] == []
    assert fold["hybrid_fcm_kd"]["reused_stages"] == ["screening"]
    assert fold["hybrid_fcm_plkd"]["reused_stages"] == ["screening", "teacher"]
    kd_teacher = load_weights(out / "hybrid_fcm_kd" / "fold-1" / "run" / "teacher" / "model.pt")
    plkd_teacher = load_weights(out / "hybrid_fcm_plkd" / "fold-1" / "run" / "teacher" / "model.pt")
    assert all(torch.equal(kd_teacher[k], plkd_teacher[k]) for k in kd_teacher)
    # Without distillation no teacher is trained, and the fold's bundle segments with the student.
    assert not (out / "hybrid_fcm" / "fold-1" / "run" / "teacher").exists()
    assert set(load_bundle(out / "hybrid_fcm" / "fold-1" / "bundle").segmenter_names()) == {"student_x2"}
    assert fold["hybrid_fcm"]["student"] == "student_x2"
    table = (out / "summary.md").read_text()
    assert all(f"| {v} |" in table for v in variants.split(",")) and "not tuned" in table
    assert (out / "variants.png").stat().st_size > 5000


def test_thick_slice_training_subjects_are_said_in_the_log_and_run_json(tmp_path, caplog):
    # Thick-slice (or plkd lowres LR@k) subjects were trained on as HR images without a word: the teacher learnt
    # interpolated slices and the students' LR inputs were made from them again.
    data = write_toy_dataset(tmp_path / "hr", n_subjects=2, seed=5)
    cfg = load_config("tiny")
    assert load_training_data(data, cfg).notes == ()
    thick = tmp_path / "thick"
    assert (
        main(["lowres", "--dataset", str(data), "--thickness-mm", "4", "--out", str(thick), "--progress", "none"]) == 0
    )
    with caplog.at_level("WARNING"):
        loaded = load_training_data(thick, cfg)
    assert len(loaded.notes) == 1 and "2 of 2 training subjects have slices more than 1.4 times" in loaded.notes[0]
    assert "sub-0001 (4)" in loaded.notes[0] and loaded.summary()["notes"] == list(loaded.notes)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == list(loaded.notes)


@pytest.fixture(scope="module")
def replace():
    """scripts/replace_networks.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("replace_networks", ROOT / "scripts" / "replace_networks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replacing_a_bundles_teacher_records_what_each_network_was_trained_with(replace, full_run, tmp_path):
    """scripts/replace_networks.py: the run's teacher goes in, the rest stays, and the manifest says that the
    new teacher was trained without the dark clip while the kept networks were trained with the legacy one."""
    bundle = tmp_path / "legacy"
    assert main(["export", str(full_run), "--out", str(bundle), "--fp32"]) == 0
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["normalisation"] = {"method": "brain-zscore", "clip_percentiles": [0.0, 99.5]}
    manifest["normalisation"]["trained_with_clip_percentiles"] = [0.5, 99.5]
    manifest_path.write_text(json.dumps(manifest))
    replace.replace_networks(str(bundle), str(full_run), str(tmp_path / "new"), ["teacher"], None)
    norm = json.loads((tmp_path / "new" / "manifest.json").read_text())["normalisation"]
    assert norm["clip_percentiles"] == [0.0, 99.5]  # what inference uses: unchanged
    trained = norm["trained_with_clip_percentiles"]
    assert trained["teacher"] == [0.0, 99.5]  # the tiny run's default
    assert trained["screening"] == trained["student_x4"] == [0.5, 99.5]
    ref = load_weights(full_run / "teacher" / "model.pt")
    new = load_bundle(tmp_path / "new").network("teacher").state_dict()
    assert all(torch.allclose(new[k].float(), ref[k].float(), atol=1e-2) for k in ref)


def test_a_student_stage_replaces_the_bundles_student_of_its_lr_factor(replace, full_run, tmp_path):
    """scripts/replace_networks.py with a student stage folder (a one-step KD fine-tune of the x4 student): the
    bundle's student_x4 becomes the run's network and says how it was trained; the other students stay; a stage
    for an LR factor the bundle has no student of is refused."""
    import shutil

    bundle = tmp_path / "bundle"
    assert main(["export", str(full_run), "--out", str(bundle), "--fp32"]) == 0
    run = tmp_path / "ft"
    stage = run / "students-kd" / "x4"
    shutil.copytree(full_run / "students" / "x4", stage)
    weights = {k: v + 0.5 if v.is_floating_point() else v for k, v in load_weights(stage / "model.pt").items()}
    torch.save(weights, stage / "model.pt")
    done = json.loads((stage / "done.json").read_text())
    (stage / "done.json").write_text(json.dumps({**done, "mode": "kd"}))

    replace.replace_networks(str(bundle), str(run), str(tmp_path / "new"), ["students-kd/x4"], None)
    new, old = load_bundle(tmp_path / "new"), load_bundle(bundle)
    got = new.network("student_x4").state_dict()
    assert all(torch.allclose(got[k].float(), weights[k].float(), atol=1e-2) for k in weights)
    same = new.network("student_x2").state_dict()
    assert all(
        torch.allclose(same[k].float(), v.float(), atol=1e-2) for k, v in old.network("student_x2").state_dict().items()
    )
    entry = new.manifest["networks"]["student_x4"]
    assert (entry["stage"], entry["mode"], entry["lr_factor"]) == ("x4", "kd", 4)
    assert new.manifest["training"]["stages"]["student_x4"]["run_stage"] == "students-kd/x4"

    # Replacing again in the result keeps the first replacement's record.
    replace.replace_networks(str(tmp_path / "new"), str(run), str(tmp_path / "again"), ["students-kd/x4"], None)
    replaced = load_bundle(tmp_path / "again").manifest["training"]["replaced"]
    assert replaced["name"] == new.name and replaced["earlier"]["name"] == old.name

    (stage / "done.json").write_text(json.dumps({**done, "lr_factor": 16}))
    with pytest.raises(PLKDError, match="trained for LR factor 16; the bundle has no student_x16"):
        replace.replace_networks(str(bundle), str(run), str(tmp_path / "new16"), ["students-kd/x4"], None)
    assert not (tmp_path / "new16").exists()


def test_a_teacher_fine_tuned_without_a_screening_stage_mines_the_bundles_screening_network(
    data_root, full_run, tmp_path, caplog
):
    """`plkd train teacher --init-from BUNDLE` in a run without a screening stage learns from the false positives
    of the bundle's screening network (the one it will be run with), not from none at all."""
    bundle = tmp_path / "bundle"
    assert main(["export", str(full_run), "--out", str(bundle), "--fp32"]) == 0
    cfg = set_value(load_config("tiny"), "sampling.screening_candidates", "5")
    expected = mine_hard_negatives(
        load_bundle(bundle).network("screening"), load_training_data(data_root, cfg), 5, torch.device("cpu")
    )
    assert expected > 0
    args = ["train", "teacher", "--data", str(data_root), "--out", str(tmp_path / "ft"), "--config", "tiny"]
    args += ["--progress", "none", "--init-from", str(bundle), "--set", "teacher.steps=1"]
    with caplog.at_level("INFO", logger="plkd"):
        assert main([*args, "--set", "sampling.screening_candidates=5"]) == 0
    name = load_bundle(bundle).name
    assert f"added {expected} screening false positives (of {name}:screening)" in caplog.text


def _renamed_copy(subject_dir: Path, folder: Path, name: str) -> Path:
    """A plain folder holding one subject of the toy data set under another name (image and label)."""
    folder.mkdir(parents=True, exist_ok=True)
    sid = subject_dir.name
    shutil.copy(subject_dir / f"{sid}_space-T2S_desc-masked_T2S.nii.gz", folder / f"{name}.nii.gz")
    shutil.copy(subject_dir / f"{sid}_space-T2S_CMB.nii.gz", folder / f"{name}_label.nii.gz")
    return folder


def test_tune_refuses_scans_the_model_was_trained_on(data_root, full_run, tmp_path, capsys):
    # The networks are surer on the scans they learnt: thresholds tuned there are too loose for new scans, and a
    # validation folder holding a copy of a training scan (another name, ids repeat across data sets) said nothing.
    bundle = tmp_path / "bundle"
    assert main(["export", str(full_run), "--out", str(bundle)]) == 0
    run = json.loads((full_run / "run.json").read_text(encoding="utf-8"))
    recorded = load_bundle(bundle).manifest["training"]["image_sha256"]
    assert sorted(recorded) == sorted(run["train_ids"])
    trained = run["train_ids"][0]
    val = _renamed_copy(data_root / trained, tmp_path / "val", "scan7")
    out = tmp_path / "tuned"
    rc = main(["tune", str(val), "--model", str(bundle), "--out", str(out), "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and err.startswith("plkd: error: 1 of 1 validation subjects (scan7 = training subject ")
    assert trained in err and not out.exists()
    # Another scan with the same subject id (sub-0001 of another data set) may be tuned on.
    other = write_toy_dataset(tmp_path / "other", n_subjects=1, seed=99)
    refuse_training_scans(load_bundle(bundle).manifest, find_subjects(other), "run")
