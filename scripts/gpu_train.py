"""Train and export a model on one GPU within a fixed wall-clock budget (data made on the spot).

Steps: ``plkd synth --domain wide`` training subjects (all CPU cores) → short probes that time
a screening, a teacher and a student step → one ``plkd train all`` with step counts that fill the
remaining budget (the students' total comparable to the teacher's) → ``plkd export``. The run is
an ordinary resumable ``plkd train`` run; the step counts chosen are written to ``budget.json``
with the measured seconds per step.

    python scripts/gpu_train.py WORK OUT [--budget-s 480] [--n-train 128] [--config gpu]
        [--modality T2S|SWI] [--phase-mask SHARE] [--set KEY=VALUE ...]

``OUT`` receives the bundle (``cmb-t2s.zip`` or ``cmb-swi.zip``), ``budget.json`` and
``logs.tar.gz`` (every stage's log.csv, curve.png, done.json and config). ``--set`` passes
configuration overrides to every ``plkd train`` (for example
``networks.screening.hparams.width=32``). ``--config tiny --n-train 3`` is a seconds-long smoke
test on a CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

T0 = time.monotonic()


def plkd(*args: str) -> None:
    """Run one ``plkd`` command with this interpreter; raise on failure."""
    cmd = [sys.executable, "-m", "plkd", *args]
    print(f"[{time.monotonic() - T0:6.0f} s] plkd {' '.join(args)}", flush=True)
    subprocess.run(cmd, check=True)


def seconds_per_step(log_csv: Path) -> float:
    """Wall seconds per step between the second and the last logged rows of a stage's log.csv."""
    with log_csv.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("time_s")]
    if len(rows) < 3:
        raise RuntimeError(f"{log_csv}: too few rows to time a step")
    a, b = rows[1], rows[-1]
    return (float(b["time_s"]) - float(a["time_s"])) / max(int(b["step"]) - int(a["step"]), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole script")
    ap.add_argument("--n-train", type=int, default=128)
    ap.add_argument("--config", default="gpu")
    ap.add_argument("--screening-share", type=float, default=0.15, help="share of the training time")
    ap.add_argument("--teacher-share", type=float, default=0.4, help="share of the rest (students get the rest)")
    ap.add_argument("--max-steps", type=int, default=40000)
    ap.add_argument("--modality", choices=("T2S", "SWI"), default="T2S", help="contrast of the training data")
    ap.add_argument("--phase-mask", type=float, default=0.0, help="SWI: share of subjects with phase-mask weighting")
    ap.add_argument("--seed", type=int, help="data seed (default 1000 for T2S, 2000 for SWI)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="configuration override")
    args = ap.parse_args()
    work, out = args.work, args.out
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    jobs = str(max(1, (os.cpu_count() or 2)))
    workers = str(max(1, (os.cpu_count() or 2) - 2))

    seed = args.seed if args.seed is not None else (1000 if args.modality == "T2S" else 2000)
    if not (work / "train" / "manifest.json").is_file():
        contrast = ["--modality", args.modality]
        if args.phase_mask > 0:
            contrast += ["--phase-mask", str(args.phase_mask)]
        plkd("synth", str(work / "train"), "--n-subjects", str(args.n_train), "--seed", str(seed), "--domain", "wide",
             "--count", "1-12", *contrast, "--jobs", jobs, "--progress", "none")  # fmt: skip
    common = ["--data", str(work / "train"), "--config", args.config, "--progress", "none"]
    common += ["--set", f"workers={workers}"]
    for override in args.set:
        common += ["--set", override]
    run = work / "run"
    budget: dict = {"budget_s": args.budget_s, "n_train": args.n_train, "config": args.config, "workers": workers}
    budget.update(modality=args.modality, phase_mask=args.phase_mask, data_seed=seed, overrides=args.set)

    # Probes: 30 timed steps of each kind of stage, on 16 subjects, in a scratch run.
    probe, few = work / "probe", ["--set", "data.max_subjects=16", "--set", "sampling.screening_candidates=0"]
    quiet = ["--set", "screening.val_every=0", "--set", "teacher.val_every=0", "--set", "students.val_every=0"]
    plkd("train", "screening", *common, *few, *quiet, "--out", str(probe), "--set", "screening.steps=30",
         "--set", "screening.log_every=5")  # fmt: skip
    plkd("train", "teacher", *common, *few, *quiet, "--out", str(probe), "--set", "teacher.steps=30",
         "--set", "teacher.log_every=5")  # fmt: skip
    plkd("train", "students", *common, *few, *quiet, "--out", str(probe), "--set", "students.stage_steps=30",
         "--set", "students.log_every=5", "--set", "students.target_factor=2",
         "--set", "students.finetune.enabled=false")  # fmt: skip
    t_screen = seconds_per_step(probe / "screening" / "log.csv")
    t_teacher = seconds_per_step(probe / "teacher" / "log.csv")
    t_student = seconds_per_step(next((probe / "students").rglob("log.csv")))
    budget.update(screening_s_per_step=t_screen, teacher_s_per_step=t_teacher, student_s_per_step=t_student)

    # One `plkd train all` (data loaded and hard negatives mined once); 90 s for loading, mining,
    # validation and export. Three PLKD stages (x2, x4, x8) and a fine-tune of the same length.
    left = args.budget_s - (time.monotonic() - T0) - 90.0
    screening_steps = int(min(args.max_steps, max(200, args.screening_share * left / t_screen)))
    rest = (1.0 - args.screening_share) * left
    teacher_steps = int(min(args.max_steps, max(100, args.teacher_share * rest / t_teacher)))
    stage_steps = int(min(args.max_steps, max(50, (1.0 - args.teacher_share) * rest / t_student / 4.0)))
    budget.update(screening_steps=screening_steps, teacher_steps=teacher_steps, student_stage_steps=stage_steps)
    (out / "budget.json").write_text(json.dumps(budget, indent=1))
    plkd("train", "all", *common, "--out", str(run), "--set", f"screening.steps={screening_steps}",
         "--set", f"teacher.steps={teacher_steps}", "--set", f"students.stage_steps={stage_steps}",
         "--set", f"students.finetune.steps={stage_steps}")  # fmt: skip
    name = f"cmb-{args.modality.lower()}"
    bundle = work / name
    if bundle.exists():
        shutil.rmtree(bundle)
    plkd("export", str(run), "--out", str(bundle), "--name", f"{name}-synthetic-wide")
    shutil.make_archive(str(out / name), "zip", bundle)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for p in sorted(run.rglob("*")):
            if p.suffix in (".csv", ".png", ".json", ".yaml") and p.is_file():
                tar.add(p, arcname=str(p.relative_to(run)))
    budget["total_s"] = round(time.monotonic() - T0, 1)
    (out / "budget.json").write_text(json.dumps(budget, indent=1))
    print(json.dumps(budget), flush=True)


if __name__ == "__main__":
    main()
