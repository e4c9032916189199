#!/usr/bin/env bash
# Robustness check on real multi-echo GRE crops (real veins, no microbleed): the model should report none.
# The crops are not part of this project; they live in the shared data folder beside the checkout.
#
#   scripts/check_real_gre.sh [BUNDLE] [DATA_DIR] [OUT]
#
# OUT defaults to a new temporary folder (printed at the end): the results are outputs of a check, not files of
# this project, and a default inside the checkout got them committed once.
set -euo pipefail
bundle=${1:-}
data=${2:-"$(dirname "$0")/../../shared/data/real-gre"}
out=${3:-$(mktemp -d "${TMPDIR:-/tmp}/real-gre-check.XXXXXX")}
[ -d "$data" ] || { echo "no real GRE data at $data" >&2; exit 2; }
model=()
[ -n "$bundle" ] && model=(--model "$bundle")
for dir in "$data"/*/; do
  name=$(basename "$dir")
  # 4-D multi-echo magnitude: combined by root-sum-of-squares (plkd predict --echo rss, the default).
  plkd predict "$dir/Mag.nii" --output-dir "$out/$name" "${model[@]}" --progress none --overwrite
  python - "$out/$name/Mag_cmb.json" "$name" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
kept = [c for c in d["candidates"] if c["kept"]]
print(f"{sys.argv[2]}: {d['n_microbleeds']} microbleed(s) reported, {len(d['candidates'])} candidate(s) screened; "
      f"student {d['student']}; notes: {'; '.join(d.get('notes', []))}")
for c in kept:
    print(f"   kept: centre {c['center_ras']} p={c['probability']:.2f} volume {c['volume_mm3']:.1f} mm3")
PY
done
echo "results in $out"
