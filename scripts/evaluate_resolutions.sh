#!/usr/bin/env bash
# Evaluate a model bundle on held-out labelled subjects at every resolution the README reports:
# the HR data as they are, LR@2/4/8 (the paper's slice-axis down-sampling + cubic up-sampling) and
# physical thick slabs of 3 and 4 mm. Every number in the README's results table comes from here.
#
#   scripts/evaluate_resolutions.sh BUNDLE TEST_DATA OUT [CONDITIONS]
#
# CONDITIONS defaults to "hr x2 x4 x8 slab3 slab4". Writes OUT/<condition>/{data,pred,eval.json,froc.png}
# and OUT/summary.md + OUT/froc.png (all conditions on one plot). Re-running skips finished predictions.
set -euo pipefail
bundle=$1
data=$2
out=$3
conditions=${4:-"hr x2 x4 x8 slab3 slab4"}
mkdir -p "$out"

for c in $conditions; do
  dir="$out/$c"
  mkdir -p "$dir"
  # LR@k images stay on the 1-mm grid, so the student is named (--lr-factor k); thick slabs are on
  # their own grid and the student is chosen automatically from the slice thickness, as for users.
  student=()
  case $c in
    hr) src=$data ;;
    x*) src="$dir/data"; student=(--lr-factor "${c#x}")
        [ -d "$src" ] || plkd lowres --dataset "$data" --factor "${c#x}" --out "$src" --progress none ;;
    slab*) src="$dir/data"; [ -d "$src" ] || plkd lowres --dataset "$data" --thickness-mm "${c#slab}" --out "$src" --progress none ;;
    *) echo "unknown condition $c" >&2; exit 2 ;;
  esac
  # Images only (not labels or brain masks): the VALDO-style names of plkd synth.
  mapfile -t images < <(find -L "$src" -name 'sub-*_desc-masked_*.nii.gz' | sort)
  plkd predict "${images[@]}" --output-dir "$dir/pred" --model "$bundle" --progress none "${student[@]}"
  plkd evaluate "$dir/pred" "$src" --json "$dir/eval.json" --froc "$dir/froc.png" > "$dir/evaluate.txt"
done

python "$(dirname "$0")/summarise_evaluations.py" "$out" $conditions
