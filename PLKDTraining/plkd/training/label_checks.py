"""Sanity checks of training labels against their images: a pairing mistake trains silently otherwise.

Nobody looks at every patch of a training run, so a label of another scan (a sorting slip in a plain
folder, a shifted or flipped label) teaches the networks that ordinary brain is a microbleed and that
the real, unlabelled microbleeds are dark spots to ignore. Microbleeds are dark on T2*-weighted and SWI
images by definition (susceptibility blooming, Greenberg et al., Lancet Neurol 2009), so a labelled
microbleed must be darker than the brain just around it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from plkd.metrics.components import label_components

#: A subject's labelled microbleeds are "not dark" when their median contrast to the ring of brain around
#: them (z-scores of the normalised image) is above this. Measured on plkd synth subjects (standard and
#: wide domain, T2S and SWI): own labels -0.56 to -2.4, labels of another subject -0.2 to +0.06.
NOT_DARK_Z = -0.25
#: The ring: voxels 2 to 4 model-grid voxels from the microbleed.
_RING = (1, 4)


def microbleed_contrasts(image: np.ndarray, mask: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per label microbleed (connected component, as the metrics count them): mean of ``image`` inside
    it minus the median of the brain (``mask``) in a ring 2-4 voxels around it (NaN when the ring holds
    no brain). Shape ``(n,)``."""
    comps, n = label_components(label > 0)
    out = np.full(n, np.nan)
    pad = _RING[1] + 1
    for k, box in enumerate(ndimage.find_objects(comps), start=1):
        if box is None:
            continue
        big = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
        inside = comps[big] == k
        ring = ndimage.binary_dilation(inside, iterations=_RING[1]) & ~ndimage.binary_dilation(
            inside, iterations=_RING[0]
        )
        ring &= mask[big] & (label[big] == 0)
        if ring.any():
            out[k - 1] = float(image[big][inside].mean() - np.median(image[big][ring]))
    return out


def label_notes(subjects: Sequence) -> tuple[str, ...]:
    """Caveats about the labels of prepared subjects (:class:`plkd.training.sampling.SubjectArrays`):
    microbleeds no darker than the brain around them, and microbleeds outside the brain mask."""
    not_dark, outside = [], []
    for s in subjects:
        if not len(s.positives):
            continue
        contrast = microbleed_contrasts(s.image, s.mask, s.label)
        if np.isfinite(contrast).any() and float(np.nanmedian(contrast)) > NOT_DARK_Z:
            not_dark.append(f"{s.id} ({float(np.nanmedian(contrast)):+.2f})")
        out = int(sum(not s.mask[tuple(p)] for p in s.positives))
        if out:
            outside.append(f"{s.id} ({out} of {len(s.positives)})")
    notes = []
    if not_dark:
        notes.append(
            f"{len(not_dark)} of {len(subjects)} subjects have labelled microbleeds no darker than the brain around "
            f"them ({_examples(not_dark)}: median contrast in z-scores): a label of another scan, a shifted or "
            "flipped label, or an image of another contrast? Check these pairs before trusting the run"
        )
    if outside:
        notes.append(
            f"{len(outside)} of {len(subjects)} subjects have labelled microbleeds outside their brain mask "
            f"({_examples(outside)}): a mask that misses them, or a label of another scan; prediction searches "
            "inside the mask only"
        )
    return tuple(notes)


def _examples(items: list[str]) -> str:
    return ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
