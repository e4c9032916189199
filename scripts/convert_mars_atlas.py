"""Bring the MARS parcellation (FSL MNI152 space) onto MNI ICBM152 2009a, once, offline.

Source: Sundaresan et al., microbleed size and counting work, GitHub
v-sundaresan/microbleed-size-counting (MIT licence), file
``MARS_regions_atlas/MARS_scale_parcellation_map_mni.nii.gz``: 182×218×182, 1 mm, FSL's
MNI152 (6th generation) grid. Its voxel values are the squares of the region labels 1..13
(stored as scaled int16), so the label is ``round(sqrt(value))``.

FSL's MNI152 and ICBM152 2009a are both "MNI space" but different templates: brains differ by a
few mm (size, ventricles, cortex). The map between them is estimated here by registering the
atlas' parenchyma (label > 0: brain minus ventricles and sulcal CSF) to the 2009a parenchyma
(grey + white matter probability from the maps shipped in nilearn's wheel) with SimpleITK:
affine (mean squares, 4 → 2 mm) then a coarse B-spline (mesh 6³). Labels are then sampled with
nearest neighbour onto the 2009a 1 mm grid, and voxels of the 2009a brain (dilated 2 mm) that
the atlas leaves unlabelled (ventricles, sulci, registration fringe) take the nearest label.

Also written: the 2009a grey/white/CSF maps at 2 mm (uint8), from which
:mod:`plkd.location.template` builds the T2*-like registration target at run time, and a JSON
sidecar with labels, classes, provenance and the measured template difference.

Run (with nilearn and SimpleITK installed; the atlas file extracted from the repository):

    python scripts/convert_mars_atlas.py MARS_scale_parcellation_map_mni.nii.gz \
        --commit e1b75f257e8ff3384a18afb17ba3ec86839b2470
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage

from plkd.location.atlas import ATLAS_FILE, DATA_DIR, LABELS, SIDECAR_FILE, TISSUE_FILE
from plkd.location.itk import RAS_TO_LPS, array_from_image, image_from_array
from plkd.synth.anatomy import nilearn_data_dir

MAP = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
REPO = "https://github.com/v-sundaresan/microbleed-size-counting"


def decode_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels 1..13 (uint8) and the affine of the published map; raises when values are not squares."""
    img = nib.load(str(path))
    values = np.asarray(img.get_fdata(), dtype=np.float64)
    labels = np.rint(np.sqrt(np.maximum(values, 0.0)))
    if np.max(np.abs(labels**2 - values)) > 0.05 or labels.max() > 13:
        raise SystemExit(f"{path}: voxel values are not squares of the labels 1..13; is this the MARS map?")
    return labels.astype(np.uint8), np.asarray(img.affine, dtype=np.float64)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.sum(a & b) / max(1, int(a.sum() + b.sum())))


def register(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """Affine then coarse B-spline; the result maps fixed (2009a) points to moving (FSL) points."""
    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-3, 300, gradientMagnitudeTolerance=1e-12)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=True)
    reg.Execute(fixed, moving)
    print(f"affine: metric {reg.GetMetricValue():.4f} after {reg.GetOptimizerIteration()} iterations")
    bspline = sitk.BSplineTransformInitializer(fixed, [6, 6, 6])
    reg2 = sitk.ImageRegistrationMethod()
    reg2.SetMetricAsMeanSquares()
    reg2.SetMetricSamplingStrategy(reg2.RANDOM)
    reg2.SetMetricSamplingPercentage(0.2, 2009)
    reg2.SetInterpolator(sitk.sitkLinear)
    reg2.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-6, numberOfIterations=100)
    reg2.SetShrinkFactorsPerLevel([1])
    reg2.SetSmoothingSigmasPerLevel([1.0])
    reg2.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg2.SetMovingInitialTransform(init)
    reg2.SetInitialTransform(bspline, inPlace=True)
    reg2.Execute(fixed, moving)
    print(f"B-spline: metric {reg2.GetMetricValue():.4f} after {reg2.GetOptimizerIteration()} iterations")
    # ITK applies the optimised transform first, then the moving initial one.
    return sitk.CompositeTransform([init, bspline])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("atlas", type=Path, help="MARS_scale_parcellation_map_mni.nii.gz from the repository")
    ap.add_argument("--commit", required=True, help="the repository commit the file was taken from")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    args = ap.parse_args()

    labels_fsl, aff_fsl = decode_labels(args.atlas)
    folder = nilearn_data_dir()
    maps = {n: nib.load(str(folder / MAP.format(n))) for n in ("t1", "gm", "wm")}
    aff = np.asarray(maps["t1"].affine, dtype=np.float64)
    t1 = np.asarray(maps["t1"].dataobj, dtype=np.float32)
    gm = np.asarray(maps["gm"].dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(maps["wm"].dataobj, dtype=np.float32) / 255.0
    brain = t1 > 0
    parenchyma = np.where(brain, gm + wm, 0.0).astype(np.float32)

    fixed_1mm = image_from_array(parenchyma, aff)
    moving_1mm = image_from_array((labels_fsl > 0).astype(np.float32), aff_fsl)
    ref2 = sitk.Resample(fixed_1mm, [int(round(s / 2)) for s in fixed_1mm.GetSize()], sitk.Transform(), sitk.sitkLinear,
                         fixed_1mm.GetOrigin(), [2.0] * 3, fixed_1mm.GetDirection())  # fmt: skip
    fixed = sitk.SmoothingRecursiveGaussian(fixed_1mm, 1.0)
    fixed = sitk.Resample(fixed, ref2, sitk.Transform(), sitk.sitkLinear)
    moving = sitk.SmoothingRecursiveGaussian(moving_1mm, 1.0)
    transform = register(fixed, moving)

    before = sitk.Resample(moving_1mm, fixed_1mm, sitk.Transform(), sitk.sitkNearestNeighbor)
    after = sitk.Resample(moving_1mm, fixed_1mm, transform, sitk.sitkNearestNeighbor)
    tissue = parenchyma >= 0.5
    d_before = dice(array_from_image(before) > 0.5, tissue)
    d_after = dice(array_from_image(after) > 0.5, tissue)
    # How far the FSL template lies from 2009a: displacement of 2009a brain points (mm).
    pts = np.argwhere(brain)[::97]
    world = pts @ aff[:3, :3].T + aff[:3, 3]
    mapped = np.array([transform.TransformPoint([float(v) for v in p]) for p in world @ RAS_TO_LPS]) @ RAS_TO_LPS
    shift = np.linalg.norm(mapped - world, axis=1)
    print(f"parenchyma Dice FSL vs 2009a: {d_before:.3f} as is, {d_after:.3f} registered; "
          f"displacement median {np.median(shift):.2f} mm, 95th pct {np.percentile(shift, 95):.2f} mm")  # fmt: skip

    atlas_img = image_from_array(labels_fsl.astype(np.float32), aff_fsl)
    labels = np.rint(array_from_image(sitk.Resample(atlas_img, fixed_1mm, transform, sitk.sitkNearestNeighbor)))
    labels = labels.astype(np.uint8)
    # Fill the 2009a brain (plus 2 mm) with the nearest label: ventricles, sulci, template fringe.
    region = ndimage.binary_dilation(brain, iterations=2)
    unlabelled = region & (labels == 0)
    _, idx = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    labels[unlabelled] = labels[tuple(i[unlabelled] for i in idx)]
    labels[~region] = 0
    filled = float(unlabelled.sum() / region.sum())

    nz = np.argwhere(labels > 0)
    lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    crop_aff = aff.copy()
    crop_aff[:3, 3] += aff[:3, :3] @ lo
    args.out.mkdir(parents=True, exist_ok=True)
    atlas_out = nib.Nifti1Image(labels[crop], crop_aff)
    atlas_out.set_qform(crop_aff, code=4)  # 4 = MNI152
    atlas_out.set_sform(crop_aff, code=4)
    nib.save(atlas_out, str(args.out / ATLAS_FILE))

    # Tissue maps at 2 mm (block means of the 1 mm maps), uint8 0..255, channels gm, wm, csf.
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0.0, 1.0)
    shape2 = tuple(s // 2 for s in brain.shape)
    blocks = [m[: 2 * shape2[0], : 2 * shape2[1], : 2 * shape2[2]].reshape(shape2[0], 2, shape2[1], 2, shape2[2], 2)
              .mean(axis=(1, 3, 5)) for m in (gm * brain, wm * brain, csf)]  # fmt: skip
    aff2 = aff.copy()
    aff2[:3, :3] *= 2.0
    aff2[:3, 3] += aff[:3, :3] @ np.full(3, 0.5)
    tissue_img = nib.Nifti1Image(np.rint(np.stack(blocks, axis=-1) * 255).astype(np.uint8), aff2)
    tissue_img.set_qform(aff2, code=4)
    tissue_img.set_sform(aff2, code=4)
    nib.save(tissue_img, str(args.out / TISSUE_FILE))

    sidecar = {
        "labels": {str(k): v for k, v in LABELS.items()},
        "space": "MNI ICBM152 2009a nonlinear symmetric, 1 mm, RAS",
        "source": {
            "repository": REPO,
            "commit": args.commit,
            "file": "MARS_regions_atlas/MARS_scale_parcellation_map_mni.nii.gz",
            "sha256": hashlib.sha256(args.atlas.read_bytes()).hexdigest(),
            "licence": "MIT (Copyright (c) 2023 vsundaresan); see LICENSE-MARS",
            "space": "FSL MNI152 (6th generation nonlinear), 1 mm",
            "reference": "Sundaresan et al., microbleed size and counting (MARS regions); "
            "MARS: Gregoire et al., Neurology 2009",
        },
        "conversion": {
            "script": "scripts/convert_mars_atlas.py",
            "method": "SimpleITK: affine + B-spline (mesh 6) registration of the atlas parenchyma (label > 0) "
            "to the 2009a grey+white matter map, mean squares, 2 mm; labels by nearest neighbour; "
            "unlabelled voxels of the 2009a brain dilated 2 mm take the nearest label",
            "parenchyma_dice_before": round(d_before, 4),
            "parenchyma_dice_after": round(d_after, 4),
            "displacement_mm_median": round(float(np.median(shift)), 2),
            "displacement_mm_p95": round(float(np.percentile(shift, 95)), 2),
            "filled_fraction": round(filled, 4),
        },
        "tissue_maps": {
            "file": TISSUE_FILE,
            "channels": ["grey matter", "white matter", "csf"],
            "source": "nilearn's copy of mni_icbm152_{gm,wm,t1}_tal_nlin_sym_09a (csf = brain - gm - wm), "
            "2x2x2 block means, x255",
            "licence": "ICBM 2009a: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, "
            "Montreal Neurological Institute, McGill University; free use with this notice (see README.md)",
        },
    }
    (args.out / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {args.out / ATLAS_FILE}, {args.out / TISSUE_FILE}, {args.out / SIDECAR_FILE}")


if __name__ == "__main__":
    main()
