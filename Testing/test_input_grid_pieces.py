"""One kept candidate is one microbleed of the label map on a thick input grid too.

``plkd predict`` outlines each microbleed on the 1 mm model grid and brings the labels onto the input grid by
nearest neighbour. On thick slices that samples one model slice per slab, so an outline joined only through the
slices in between fell apart into pieces: ``plkd evaluate`` (and VALDO's rule) counts every 26-connected piece as a
microbleed, so one false candidate became two false positives (test10, 3 mm slabs: a 17-voxel outline left a
2-voxel piece, 9 false positives scored for 8 false candidates) while the JSON listed one microbleed.
"""

from __future__ import annotations

import numpy as np

from plkd.inference.predictor import labels_to_input
from plkd.inference.preprocess import prepare
from plkd.inference.segmentation import keep_largest_pieces
from plkd.metrics.components import find_components
from plkd.volumes import Volume


def test_an_outline_joined_between_sampled_slices_stays_one_microbleed_on_3mm_slices() -> None:
    shape, affine = (30, 30, 10), np.diag([1.0, 1.0, 3.0, 1.0])
    image = 1000.0 * (1.0 + 0.03 * np.random.default_rng(0).standard_normal(shape))
    volume = Volume(image.astype(np.float32), affine)
    prep = prepare(volume, np.ones(shape, dtype=bool), np.ones(3))
    # The model slice each input slab takes its labels from (nearest neighbour through RAS).
    inv = np.linalg.inv(prep.affine)
    centre_ras = volume.affine[:3, :3] @ np.array([15.0, 15.0, 5.0]) + volume.affine[:3, 3]
    vox = np.rint(inv[:3, :3] @ centre_ras + inv[:3, 3]).astype(int)
    i, j, z = vox
    labels = np.zeros(prep.data.shape, dtype=np.int32)
    labels[i : i + 3, j : j + 2, z] = 1  # 6 voxels in the sampled slice
    labels[i + 5, j, z] = 1  # 1 voxel there, 2 voxels away
    labels[i : i + 6, j, z + 1] = 1  # joined in the next model slice, which no slab samples
    assert find_components(labels > 0).n == 1  # one microbleed on the model grid

    on_input, kept = labels_to_input(labels, prep, volume, [])
    assert kept == {1: 1}
    pieces = find_components(on_input > 0)
    assert pieces.n == 1  # plkd evaluate counts one microbleed, as the JSON lists one
    assert pieces.sizes.tolist() == [6]  # the largest piece is kept


def test_keep_largest_pieces_leaves_whole_labels_and_touching_labels_alone() -> None:
    labels = np.zeros((12, 6, 3), dtype=np.int16)
    labels[0:2, 0:2, 1] = 1  # one piece
    labels[4:6, 0:2, 1] = 2  # label 2 touches label 3: two labels, one component (merge_touching_labels's case)
    labels[6:8, 0:2, 1] = 3
    labels[10, 4, 1] = 3  # ... and a piece of label 3 apart from it
    labels[0, 5, 0] = 4  # a single voxel
    out = keep_largest_pieces(labels)
    expected = labels.copy()
    expected[10, 4, 1] = 0
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == labels.dtype
