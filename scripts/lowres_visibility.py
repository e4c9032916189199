"""How many microbleeds LR@k keeps at all: the detection ceiling of slice down-sampling.

LR@k (``plkd lowres --factor k``, the paper's simulation) keeps one slice in k and interpolates
the rest. A microbleed that lies wholly between two kept slices leaves no trace in the LR image,
so no method can find it; this script counts, for each factor, the microbleeds (label
components, counted as ``plkd evaluate`` counts them) with at least one voxel on a kept slice
(the default sampling phase of :func:`plkd.lowres.simulate_lowres`, ``(k - 1) // 2``).

    python scripts/lowres_visibility.py DATA [FACTORS]      # e.g. test10 2,4,8
"""

from __future__ import annotations

import argparse
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


def _factors(text: str) -> list[int]:
    """``2,4,8`` → ``[2, 4, 8]``; anything but whole numbers from 2 up is refused."""
    try:
        factors = [int(f) for f in text.split(",")]
    except ValueError:
        factors = []
    if not factors or any(k < 2 for k in factors):
        raise argparse.ArgumentTypeError(f"FACTORS must be whole numbers from 2 up, comma-separated, not {text!r}")
    return factors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="data set folder (plkd synth's layout: labelled subjects)")
    parser.add_argument("factors", nargs="?", default=[2, 4, 8], type=_factors, metavar="FACTORS",
                        help="LR factors, comma-separated (default 2,4,8)")  # fmt: skip
    args = parser.parse_args(argv)
    factors = args.factors
    total, visible = visible_counts(args.data, factors)  # labelled subjects; the others said in one warning line
    print(f"| factor | microbleeds on a kept slice (of {total}) | ceiling on TPR |")
    print("|---|---:|---:|")
    for k in factors:
        print(f"| LR@{k} | {visible[k]} | {100 * visible[k] / max(total, 1):.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
