"""How many microbleeds LR@k keeps at all: the detection ceiling of slice down-sampling.

LR@k (``plkd lowres --factor k``, the paper's simulation) keeps one slice in k and interpolates
the rest. A microbleed that lies wholly between two kept slices leaves no trace in the LR image,
so no method can find it; this script counts, for each factor, the microbleeds (label
components, counted as ``plkd evaluate`` counts them) with at least one voxel on a kept slice
(the default sampling phase of :func:`plkd.lowres.simulate_lowres`, ``(k - 1) // 2``).

    python scripts/lowres_visibility.py DATA [FACTORS]      # e.g. test10 2,4,8
"""

from __future__ import annotations

import sys

from scipy import ndimage

from plkd.cli import exit_code_of
from plkd.data.datasets import find_subjects, load_subject
from plkd.metrics.components import binarise_reference, label_components
from plkd.metrics.scored import scored_labelled_subjects


def visible_counts(data: str, factors: list[int]) -> tuple[int, dict[int, int]]:
    """Total microbleeds and, per factor, how many touch a kept slice (slice axis = last)."""
    total, visible = 0, dict.fromkeys(factors, 0)
    subjects, _counted = scored_labelled_subjects(find_subjects(data), "lowres_visibility")
    for subject in subjects:
        _, label, _ = load_subject(subject)
        comps, n = label_components(binarise_reference(label.data))
        slices = ndimage.find_objects(comps)
        total += n
        for k in factors:
            phase = (k - 1) // 2
            visible[k] += sum(any((z - phase) % k == 0 for z in range(s[2].start, s[2].stop)) for s in slices)
    return total, visible


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    factors = [int(f) for f in (argv[1] if len(argv) > 1 else "2,4,8").split(",")]
    total, visible = visible_counts(argv[0], factors)  # labelled subjects; the others said in one warning line
    print(f"| factor | microbleeds on a kept slice (of {total}) | ceiling on TPR |")
    print("|---|---:|---:|")
    for k in factors:
        print(f"| LR@{k} | {visible[k]} | {100 * visible[k] / max(total, 1):.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(lambda: main(sys.argv[1:])))
