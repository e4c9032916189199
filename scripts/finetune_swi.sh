#!/usr/bin/env bash
# The shipped SWI model (plkd/bundled/cmb-swi): every stage of the shipped T2* model fine-tuned on
# wide-domain SWI-like synthetic subjects, on a CPU (about 1.5 h on 2 cores), then calibrated and
# tuned on SWI validation subjects that training never saw.
#
#   scripts/finetune_swi.sh WORK [T2S_BUNDLE]
#
# WORK receives the data (train, val), the resumable run (WORK/run: rerun the script to resume) and
# the bundles WORK/cmb-swi-raw (exported) and WORK/cmb-swi (calibrated + tuned: the one to ship).
set -euo pipefail
work=$1
t2s=${2:-$(dirname "$0")/../PLKDTraining/plkd/bundled/cmb-t2s}
mkdir -p "$work"
cd "$work"

[ -f train/manifest.json ] || plkd synth train --n-subjects 64 --seed 2000 --modality SWI --domain wide --count 1-12 --jobs 2 --progress none
[ -f val/manifest.json ] || plkd synth val --n-subjects 10 --seed 61000 --modality SWI --domain wide --count 1-12 --jobs 2 --progress none

# Screening and teacher: fine-tuned at a lower learning rate than from scratch, with the screening
# network's false positives as hard negatives. (The shipped model ran these with num_threads=1, in one
# `plkd train all` that was stopped after the teacher; the same steps and seeds give the same batches.)
common=(--data train --out run --init-from "$t2s" --set num_threads=2 --set workers=1 --set optim.warmup_steps=30
        --progress none)
plkd train screening "${common[@]}" --set screening.steps=600 --set screening.lr=3.0e-4 --set screening.val_every=200
plkd train teacher "${common[@]}" --set teacher.steps=800 --set teacher.lr=3.0e-4 --set teacher.val_every=200 \
  --set teacher.checkpoint_every=50
# Students x2 -> x4 -> x8 distilled from the SWI teacher, each starting from the T2* model's student of
# its factor, then the x8 fine-tune; without a second mining pass (CPU time).
plkd train students "${common[@]}" --set sampling.screening_candidates=0 --set students.stage_steps=100 \
  --set students.finetune.steps=100 --set students.lr=2.0e-4 --set students.val_every=50 \
  --set students.checkpoint_every=25

plkd export run --out cmb-swi-raw --name cmb-swi-synthetic-wide-ft --overwrite
plkd tune val --model cmb-swi-raw --out cmb-swi --overwrite --plot reliability-swi.png --progress none
