#!/usr/bin/env bash
# Step 13 (docs/results.md): the T2* students fine-tuned on a CPU with the dark end of the intensities unclipped
# (data.clip_percentiles 0-99.5, the default), each by one-step distillation from the step-12 teacher (which was
# trained the same way), starting from the bundle's student of the same LR factor. Each student is put into the
# bundle and calibrated and tuned on validation subjects that training never saw; a student is kept only when its
# tuned validation F1 is higher. About 27 min of one core per student (4 s per step of 8 patches, the teacher's
# forward pass included) plus 10 min of tuning each.
#
#   scripts/finetune_t2s_students.sh WORK [FACTORS] [T2S_BUNDLE]
#
# FACTORS: LR factors to fine-tune, in order (default "4 2": the x4 student serves 3 and 4 mm slices).
# WORK needs WORK/train, WORK/val and the finished teacher WORK/run/teacher of scripts/finetune_t2s_teacher.sh
# (run that first with the same WORK). It receives WORK/run-x<F> (resumable: rerun the script to resume),
# WORK/copy-x<F> (the bundle with the new student) and WORK/tuned-x<F> (tuned; the input of the next factor).
set -euo pipefail
work=$1
factors=${2:-"4 2"}
bundle=$(realpath "${3:-$(dirname "$0")/../PLKDTraining/plkd/bundled/cmb-t2s}")
scripts=$(realpath "$(dirname "$0")")
cd "$work"
[ -f run/teacher/done.json ] || { echo "no finished teacher in $work/run/teacher: run finetune_t2s_teacher.sh first" >&2; exit 2; }
name=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['name'])" "$bundle/manifest.json")

for f in $factors; do
  # One-step KD (alpha 0.7 soft Dice, beta 0.3 distillation), LR inputs as the PLKD fine-tune makes them.
  plkd train students --data train --out "run-x$f" --teacher run/teacher --mode kd --target-factor "$f" \
    --init-from "$bundle" --set num_threads=1 --set workers=1 --set optim.warmup_steps=30 \
    --set students.single_stage_steps=400 --set students.lr=2.0e-4 --set 'students.lr_modes=[interp, slab]' \
    --set students.lr_noise_std=0.02 --set students.val_every=100 --set students.checkpoint_every=50 --progress none
  [ -d "copy-x$f" ] || python "$scripts/replace_networks.py" "$bundle" "run-x$f" "copy-x$f" \
    --stages "students-kd/x$f" --name "$name"
  [ -d "tuned-x$f" ] || plkd tune val --model "copy-x$f" --out "tuned-x$f" --students "student_x$f" \
    --plot "reliability-x$f.png" --progress none
  before=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['tuning']['segmenters'][sys.argv[2]]['after']['F1'])" "$bundle/manifest.json" "student_x$f")
  after=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['tuning']['segmenters'][sys.argv[2]]['after']['F1'])" "tuned-x$f/manifest.json" "student_x$f")
  echo "student_x$f: validation F1 $before -> $after"
  if python -c "import sys; sys.exit(0 if float(sys.argv[2]) > float(sys.argv[1]) else 1)" "$before" "$after"; then
    bundle=$(realpath "tuned-x$f")  # kept: the next factor is put into this bundle
  fi
done
echo "result: $bundle"
