"""Register a T2*/SWI scan to MNI ICBM152 2009a with SimpleITK, and say when it failed.

The scan is the *fixed* image and the T2*-like template (:mod:`plkd.location.template`) the
*moving* one, so the optimised transform maps scan points to MNI points directly (what a
candidate needs) and the metric is sampled only where the scan has data: a partial field of
view or thick slices simply give fewer samples. Everything is done in physical space, so any
orientation (oblique, LPS-ordered, transposed axes) is handled by the header geometry.

Steps: the brain-masked scan scaled to 0..1, block-averaged to about ``spacing_mm`` (3 mm) →
centre-of-mass initialisation → affine, Mattes mutual information (:data:`BINS` bins),
regular-step gradient descent at 12, 6 and 3 mm → optionally (``deformable=True``, off by
default: it did not pay within the 5 s budget, see ``docs/results.md``) a coarse B-spline →
sanity checks: at least :data:`MIN_BRAIN_ML` of brain, no reflection, the affine's scalings within
:data:`SCALE_RANGE`, and the Dice overlap of the scan's brain mask with the template brain carried
onto it at least :data:`MIN_DICE` (:data:`MIN_DICE_PARTIAL` when the field of view holds less than
:data:`PARTIAL_COVERAGE` of that brain). A failed check gives ``status = "failed"`` with the reason;
callers then leave every location ``"unknown"``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from plkd.errors import PLKDError
from plkd.location.itk import RAS_TO_LPS, array_from_image, image_from_array, import_sitk, transform_points_ras
from plkd.location.template import load_template

#: Voxel size (mm) of the grid the scan is registered on.
SPACING_MM = 3.0
#: Allowed singular values of the scan→MNI affine (heads are 0.8-1.25× the template in practice).
SCALE_RANGE = (0.7, 1.45)
#: Minimum Dice of the scan's brain mask with the registered template brain (inside the scan).
MIN_DICE = 0.8
#: A scan whose field of view holds less than this share of the registered template brain is a
#: partial one (a slab, a crop through the brain) ...
PARTIAL_COVERAGE = 0.9
#: ... and must overlap it at least this well: a cut face leaves the fit free to slide or stretch
#: along it while Dice stays high (measured wrong fits: 0.82-0.87 on synthetic heads cut to their
#: top 70 mm or to one hemisphere, 18-26 mm off; 0.94 on the template's top half, 10 mm off), where
#: correct partial fits of skull-stripped synthetic scans scored 0.964-0.985 (``docs/results.md``).
#: Whole-head scans keep :data:`MIN_DICE`: a correct non-skull-stripped 4 mm scan scored 0.82.
MIN_DICE_PARTIAL = 0.95
#: The metric is sampled up to this far (mm) outside the brain mask: the brain edge guides the fit.
MASK_MARGIN_MM = 6.0
#: Smallest brain (ml) worth registering: an adult brain is 1000-1500 ml; a partial field of view
#: keeping at least a third of it still constrains the fit.
MIN_BRAIN_ML = 300.0
#: Gradient-descent iterations per resolution level (12, 6 and 3 mm) of the affine step.
AFFINE_ITERATIONS = 100
#: Coarse deformable step (``deformable=True``): control mesh, iterations, grid shrink factor.
BSPLINE_MESH = (3, 3, 3)
BSPLINE_ITERATIONS = 30
BSPLINE_SHRINK = 2
#: Share of the (masked) scan voxels the metric samples per level (12, 6, 3 mm).
SAMPLING = (1.0, 0.5, 0.25)
#: Histogram bins of the mutual information.
BINS = 16
#: Seed of the metric's random sampling, so a scan always registers the same way.
SAMPLING_SEED = 20090


@dataclass
class Registration:
    """The scan→MNI map and how it was obtained.

    ``status`` is ``"ok"`` or ``"failed"`` (then ``reason`` says why and :meth:`to_mni` returns
    NaN); ``checks`` holds the measured sanity values (scalings, Dice, metric, seconds).
    """

    status: str
    reason: str | None = None
    transform: Any = None
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the registration passed its checks."""
        return self.status == "ok"

    def to_mni(self, points_ras: np.ndarray) -> np.ndarray:
        """MNI (RAS mm) coordinates ``(N, 3)`` of scan points ``(N, 3)`` (RAS mm); NaN when failed.

        ``transform`` is a SimpleITK transform, or a 4x4 scan-RAS→MNI-RAS matrix (:meth:`matrix`, as a
        prediction's JSON keeps it for the clicks on its scan)."""
        pts = np.atleast_2d(np.asarray(points_ras, dtype=np.float64)).reshape(-1, 3)
        if not self.ok or self.transform is None:
            return np.full(pts.shape, np.nan)
        if isinstance(self.transform, np.ndarray):
            return pts @ self.transform[:3, :3].T + self.transform[:3, 3]
        return transform_points_ras(self.transform, pts)

    def matrix(self) -> np.ndarray | None:
        """The scan-RAS→MNI-RAS map as a 4x4 matrix (mm), or None when failed or not affine (the deformable step).

        Fitted to the images of the corners of a 200 mm cube and checked on its centre, so a transform that is
        not affine within 0.01 mm gives None rather than an approximation."""
        if not self.ok or self.transform is None:
            return None
        corners = np.array([[x, y, z] for x in (-100, 100) for y in (-100, 100) for z in (-100, 100)], dtype=float)
        mapped = self.to_mni(corners)
        fit, *_ = np.linalg.lstsq(np.c_[corners, np.ones(len(corners))], mapped, rcond=None)
        out = np.eye(4)
        out[:3, :] = fit.T
        if np.linalg.norm(self.to_mni(np.zeros((1, 3)))[0] - out[:3, 3]) > 0.01:
            return None
        if np.abs(np.c_[corners, np.ones(len(corners))] @ fit - mapped).max() > 0.01:
            return None
        return out


def _shrink(img: Any, spacing: float, sitk: Any) -> Any:
    """``img`` averaged over blocks of about ``spacing`` mm (axes already coarser are kept)."""
    factors = [max(1, int(round(spacing / s))) for s in img.GetSpacing()]
    return sitk.BinShrink(img, factors) if max(factors) > 1 else img


def _method(sitk: Any, fixed_mask: Any, iterations: int) -> Any:
    """Mattes mutual information on a random subset of the masked scan voxels, regular-step descent.

    Few histogram bins (:data:`BINS`) keep the metric smooth on a 3-12 mm grid with a few thousand
    samples; with 32 bins the optimiser wandered off on noise in our tests.
    """
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=BINS)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel(list(SAMPLING), SAMPLING_SEED)
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=0.01,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    return reg


def register_to_mni(
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    deformable: bool = False,
    spacing_mm: float = SPACING_MM,
) -> Registration:
    """Register a scan (``[i, j, k]`` array, voxel-to-RAS ``affine``) to the MNI template.

    ``mask`` (bool, same grid) is the scan's brain mask; without it every voxel above zero
    counts. Never raises for a registration problem: a failure is returned as ``status =
    "failed"`` with a one-line ``reason``.
    """
    t0 = time.perf_counter()
    try:
        sitk = import_sitk()
    except ImportError:
        return Registration("failed", "SimpleITK is not installed (pip install SimpleITK)")
    data = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(data)
    brain = np.asarray(mask, dtype=bool) if mask is not None else data > 0
    # NaN/inf voxels are no brain (ITK's optimiser loops on a NaN metric instead of failing).
    brain = brain & finite
    data = np.where(finite, data, 0.0).astype(np.float32)
    brain_ml = float(brain.sum()) * abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    if brain_ml < MIN_BRAIN_ML:
        reason = f"the brain mask holds only {brain_ml:.0f} ml: too little of a brain to register"
        return Registration("failed", reason, checks={"brain_ml": round(brain_ml, 1)})
    lo, hi = np.percentile(data[brain], [0.5, 99.5])
    # 0 outside the brain, 0..1 inside: like the skull-less template, and positive for the moments.
    scaled = np.where(brain, (np.clip(data, lo, hi) - lo) / max(hi - lo, 1e-6), 0.0).astype(np.float32)
    try:
        fixed = _shrink(image_from_array(scaled, affine), spacing_mm, sitk)
        fixed_brain = _shrink(image_from_array(brain.astype(np.float32), affine), spacing_mm, sitk)
        brain_small = array_from_image(fixed_brain) >= 0.5
        margin = max(1, int(round(MASK_MARGIN_MM / spacing_mm)))
        sample = ndimage.binary_dilation(brain_small, iterations=margin)
        sample_img = sitk.GetImageFromArray(sample.transpose(2, 1, 0).astype(np.uint8))
        sample_img.CopyInformation(fixed)

        tpl = load_template()
        moving = image_from_array(tpl.image, tpl.affine)
        init = sitk.CenteredTransformInitializer(
            sitk.Mask(fixed, sitk.Cast(sample_img, sitk.sitkUInt8)),
            moving,
            sitk.AffineTransform(3),
            sitk.CenteredTransformInitializerFilter.MOMENTS,
        )
        reg = _method(sitk, sample_img, AFFINE_ITERATIONS)
        reg.SetShrinkFactorsPerLevel([4, 2, 1])
        reg.SetSmoothingSigmasPerLevel([1.0, 0.5, 0.0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetInitialTransform(init, inPlace=True)
        reg.Execute(fixed, moving)
        checks: dict[str, Any] = {"metric_affine": round(float(reg.GetMetricValue()), 4)}
        transform: Any = sitk.AffineTransform(init)
        if deformable:
            bspline = sitk.BSplineTransformInitializer(fixed, list(BSPLINE_MESH))
            reg2 = _method(sitk, sample_img, BSPLINE_ITERATIONS)
            reg2.SetMetricSamplingPercentagePerLevel([SAMPLING[1]], SAMPLING_SEED)
            reg2.SetOptimizerAsRegularStepGradientDescent(
                learningRate=1.0,
                minStep=0.01,
                numberOfIterations=BSPLINE_ITERATIONS,
                relaxationFactor=0.5,
                gradientMagnitudeTolerance=1e-8,
            )
            reg2.SetShrinkFactorsPerLevel([BSPLINE_SHRINK])
            reg2.SetSmoothingSigmasPerLevel([0.5])
            reg2.SetMovingInitialTransform(transform)
            reg2.SetInitialTransform(bspline, inPlace=True)
            reg2.Execute(fixed, moving)
            checks["metric_deformable"] = round(float(reg2.GetMetricValue()), 4)
            # ITK applies the optimised B-spline first, then the moving initial (affine) transform.
            transform = sitk.CompositeTransform([transform, bspline])
    except PLKDError as exc:  # the shipped template is missing: a broken installation
        return Registration("failed", str(exc), checks={"seconds": _since(t0)})
    except RuntimeError as exc:  # ITK reports every failure as RuntimeError
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return Registration("failed", f"registration error: {first[:160]}", checks={"seconds": _since(t0)})

    matrix = RAS_TO_LPS @ np.asarray(init.GetMatrix(), dtype=np.float64).reshape(3, 3) @ RAS_TO_LPS
    scales = np.linalg.svd(matrix, compute_uv=False)
    checks["scales"] = [round(float(s), 3) for s in scales]
    dice, inside_ml = _overlap(sitk, fixed, brain_small, moving, tpl.mask, transform)
    tpl_ml = float(tpl.mask.sum()) * abs(float(np.linalg.det(tpl.affine[:3, :3]))) / 1000.0
    # Share of the template brain (in scan mm: divided by the affine's volume change) in the scan.
    coverage = inside_ml * abs(float(np.linalg.det(matrix))) / tpl_ml
    checks["dice"] = round(dice, 3)
    checks["coverage"] = round(coverage, 3)
    checks["seconds"] = _since(t0)
    if np.linalg.det(matrix) <= 0:
        return Registration("failed", "registration flipped the brain (negative determinant)", checks=checks)
    if scales.min() < SCALE_RANGE[0] or scales.max() > SCALE_RANGE[1]:
        rng = f"{scales.min():.2f}-{scales.max():.2f}"
        return Registration("failed", f"implausible scaling {rng} of the scan to the MNI template", checks=checks)
    if dice < MIN_DICE:
        return Registration("failed", f"poor overlap with the MNI brain (Dice {dice:.2f} < {MIN_DICE})", checks=checks)
    if coverage < PARTIAL_COVERAGE and dice < MIN_DICE_PARTIAL:
        reason = (
            f"the scan covers {100 * coverage:.0f} % of the brain and overlaps the MNI brain too loosely "
            f"for a partial field of view (Dice {dice:.2f} < {MIN_DICE_PARTIAL})"
        )
        return Registration("failed", reason, checks=checks)
    return Registration("ok", None, transform, checks)


def _overlap(
    sitk: Any, fixed: Any, brain_small: np.ndarray, moving: Any, tpl_mask: np.ndarray, transform: Any
) -> tuple[float, float]:
    """Dice of the scan's brain with the template brain pulled onto the scan's grid, and the
    volume (ml, scan space) of that template brain inside the scan's field of view."""
    tpl_img = sitk.GetImageFromArray(tpl_mask.transpose(2, 1, 0).astype(np.float32))
    tpl_img.CopyInformation(moving)
    warped = array_from_image(sitk.Resample(tpl_img, fixed, transform, sitk.sitkLinear, 0.0)) >= 0.5
    inter = float(np.sum(warped & brain_small))
    dice = 2.0 * inter / max(1.0, float(warped.sum() + brain_small.sum()))
    return dice, float(warped.sum()) * float(np.prod(fixed.GetSpacing())) / 1000.0


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)
