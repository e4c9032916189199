"""Score microbleed location (registration + MARS atlas) against plkd synth's truth.

Held-out synthetic subjects (seeds never used for training) are simulated at 1 mm; each is
then seen as acquired in several ways (same physical anatomy, so the same truth):

* ``1mm``: as simulated (axis-aligned, RAS-ordered);
* ``3mm`` / ``4mm``: true thick slices (``plkd.lowres.thick_slab_volume``, axial);
* ``oblique-3mm`` / ``oblique-4mm``: a stack tilted by a random 10-25° about two axes,
  resampled from the 1 mm volume, its slabs averaged to 3/4 mm, stored LPS-ordered (i and j
  reversed), like a scanner's oblique acquisition;
* ``partial-fov``: 1 mm with the top 30 mm of the head cut off.

``--crops`` scores fields of view cut through the brain instead (``top-45%``: the upper 45 % of
the brain's height, ``left-50%``/``right-50%``: one hemisphere, ``anterior-45%``,
``posterior-45%``, ``bottom-55%``), each against the microbleeds inside it; such a scan must be
placed correctly or fail its checks (``unknown``), never be placed wrongly.

For every condition the scan goes through the predictor's own preparation (brain mask,
model grid) and :func:`plkd.location.locate_candidates`, with the true microbleed centres as
the candidates (this isolates the location step from detection). Truth: each microbleed's
``mars_location``/``mars_region`` (the shipped atlas at its true MNI point, from the
simulator's known deformation) and, as a second reference, the simulator's own geometric
class ``location``. SimpleITK runs on ``--threads`` threads (2 = the issue's budget).

    python scripts/evaluate_location.py --subjects 20 --out eval/location.json \
        --figure Resources/Screenshots/location-registration.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from plkd.inference.brainmask import resolve_brain_mask
from plkd.inference.preprocess import prepare
from plkd.location import CLASSES, locate_candidates
from plkd.lowres import thick_slab_volume
from plkd.resample import resample_array
from plkd.synth.subject import generate_subject
from plkd.volumes import Volume

KNOWN = CLASSES[:3]


def rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_stack(vol: Volume, thickness: float, rng: np.random.Generator) -> Volume:
    """``vol`` re-acquired on a tilted, LPS-ordered grid with ``thickness`` mm slices (1 mm in plane)."""
    angles = rng.uniform(10.0, 25.0, size=3) * rng.choice([-1.0, 1.0], size=3)
    angles[2] *= 0.3  # in-plane rotation: smaller, as on a scanner
    rot = rotation(angles)
    corners = np.array([[i, j, k] for i in (0, vol.shape[0]) for j in (0, vol.shape[1]) for k in (0, vol.shape[2])])
    world = corners @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    local = world @ rot  # coordinates along the tilted axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    k = int(round(thickness))
    shape = tuple(int(np.ceil(v)) for v in (hi - lo))
    shape = (shape[0], shape[1], int(np.ceil(shape[2] / k)) * k)
    fine = np.eye(4)
    fine[:3, :3] = rot
    fine[:3, 3] = rot @ (lo + 0.5)
    data = resample_array(vol.data, vol.affine, fine, shape, order=1)
    thick = data.reshape(shape[0], shape[1], shape[2] // k, k).mean(axis=3)
    aff = fine.copy()
    aff[:3, 2] *= k
    aff[:3, 3] = fine[:3, :3] @ np.array([0.0, 0.0, (k - 1) / 2.0]) + fine[:3, 3]
    # Store LPS-ordered: reverse i and j (voxel (0,0) at the right-anterior corner).
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, thick.shape[0] - 1
    flip[1, 1], flip[1, 3] = -1.0, thick.shape[1] - 1
    return Volume(data=np.ascontiguousarray(thick[::-1, ::-1, :]), affine=aff @ flip)


def partial_fov(vol: Volume, cut_mm: float = 30.0) -> Volume:
    """``vol`` without its top ``cut_mm`` (superior end of the axial axis)."""
    keep = vol.shape[2] - int(round(cut_mm / float(np.linalg.norm(vol.affine[:3, 2]))))
    return Volume(data=np.ascontiguousarray(vol.data[:, :, :keep]), affine=vol.affine.copy())


def conditions(vol: Volume, rng: np.random.Generator) -> dict[str, Volume]:
    return {
        "1mm": vol,
        "3mm": thick_slab_volume(vol, 3.0, axis=2),
        "4mm": thick_slab_volume(vol, 4.0, axis=2),
        "oblique-3mm": oblique_stack(vol, 3.0, rng),
        "oblique-4mm": oblique_stack(vol, 4.0, rng),
        "partial-fov": partial_fov(vol),
    }


def crop(vol: Volume, axis: int, lo: float, hi: float) -> Volume:
    """``vol`` between fractions ``lo`` and ``hi`` of the brain's extent along voxel ``axis``."""
    nz = np.flatnonzero(vol.data.any(axis=tuple(a for a in range(3) if a != axis)))
    k0 = max(0, nz[0] + int((nz[-1] - nz[0]) * lo))
    k1 = min(vol.shape[axis], nz[0] + int((nz[-1] - nz[0]) * hi) + 1)
    index = [slice(None)] * 3
    index[axis] = slice(k0, k1)
    affine = vol.affine.copy()
    affine[:3, 3] += vol.affine[:3, axis] * k0
    return Volume(data=np.ascontiguousarray(vol.data[tuple(index)]), affine=affine)


def crop_conditions(vol: Volume, rng: np.random.Generator) -> dict[str, Volume]:
    """Fields of view cut through the brain (``vol`` is RAS-ordered: i → the patient's right (+x), j → anterior,
    k → up)."""
    return {
        "top-45%": crop(vol, 2, 0.55, 1.01),
        "bottom-55%": crop(vol, 2, -0.01, 0.55),
        "right-50%": crop(vol, 0, 0.5, 1.01),
        "left-50%": crop(vol, 0, -0.01, 0.5),
        "posterior-45%": crop(vol, 1, -0.01, 0.45),
        "anterior-45%": crop(vol, 1, 0.55, 1.01),
    }


def inside(vol: Volume, truth: list[dict]) -> list[dict]:
    """The microbleeds whose centre lies in ``vol``'s field of view."""
    inv = np.linalg.inv(vol.affine)
    ijk = np.array([t["center_ras"] for t in truth]).reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]
    ok = np.all((ijk >= 0) & (ijk <= np.asarray(vol.shape) - 1), axis=1)
    return [t for t, keep in zip(truth, ok, strict=True) if keep]


def locate(vol: Volume, truth: list[dict]) -> tuple[list[dict], dict, float]:
    """Run the predictor's preparation and the location step on the true centres."""
    brain, _ = resolve_brain_mask(vol)
    prep = prepare(vol, brain, np.ones(3))
    cands = [{"center_ras": t["center_ras"], "kept": True} for t in truth]
    t0 = time.perf_counter()
    block = locate_candidates(prep.data, prep.affine, cands, prep.mask)
    return cands, block, time.perf_counter() - t0


def confusion(pairs: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    return {t: {p: sum(1 for a, b in pairs if a == t and b == p) for p in CLASSES} for t in KNOWN}


def summarise_condition(rows: list[dict]) -> dict:
    pairs = [(r["truth"], r["pred"]) for r in rows if r["truth"] in KNOWN]
    sim = [(r["sim"], r["pred"]) for r in rows]
    err = np.array([r["mni_error"] for r in rows if r["mni_error"] is not None])
    out = {
        "microbleeds": len(pairs),
        "agreement": round(float(np.mean([a == b for a, b in pairs])), 4) if pairs else None,
        "per_class": {
            c: round(float(np.mean([b == c for a, b in pairs if a == c])), 4) if any(a == c for a, _ in pairs) else None
            for c in KNOWN
        },
        "region_agreement": round(float(np.mean([r["truth_region"] == r["region"] for r in rows])), 4),
        "agreement_simulator_class": round(float(np.mean([a == b for a, b in sim])), 4) if sim else None,
        "unknown": sum(1 for _, b in pairs if b == "unknown"),
        # Placed in a wrong class without a word: the error that matters most to a reader.
        "wrong": sum(1 for a, b in pairs if b not in (a, "unknown")),
        "mni_error_mm": {
            "median": round(float(np.median(err)), 2) if err.size else None,
            "p95": round(float(np.percentile(err, 95)), 2) if err.size else None,
        },
        "confusion": confusion(pairs),
    }
    return out


def radiological(axial: np.ndarray) -> np.ndarray:
    """An axial slice ``(i, j)`` of a RAS-ordered grid as displayed in the radiological convention: rows from
    anterior (top) to posterior, columns from the patient's right (left of the picture) to the left. On RAS
    voxels i runs towards the patient's right (+x), j towards anterior."""
    return np.asarray(axial).T[::-1, ::-1]


def display_xy(voxel: np.ndarray, shape: tuple[int, ...]) -> tuple[float, float]:
    """Where voxel ``(i, j, k)`` of a RAS-ordered grid lies in :func:`radiological`'s picture: (column, row)."""
    return float(shape[0] - 1 - voxel[0]), float(shape[1] - 1 - voxel[1])


def figure(vol: Volume, cands: list[dict], path: Path) -> None:
    """Axial slice of a registered scan with the MARS atlas outline pulled onto it (radiological view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plkd.location import load_atlas, register_to_mni

    brain, _ = resolve_brain_mask(vol)
    reg = register_to_mni(vol.data, vol.affine, brain)
    atlas = load_atlas()
    kept_z = [c["center_ras"][2] for c in cands if c.get("region") not in (None, "unknown")]
    zs = sorted(kept_z) or [float(vol.affine[2, 3] + vol.affine[2, 2] * vol.shape[2] / 2)]
    z_world = float(np.median(zs))
    k = int(round((z_world - vol.affine[2, 3]) / vol.affine[2, 2]))
    ii, jj = np.meshgrid(np.arange(vol.shape[0]), np.arange(vol.shape[1]), indexing="ij")
    vox = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1).astype(np.float64)
    ras = vox @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    inside = brain[:, :, k].ravel()
    labels = np.zeros(ii.size, dtype=np.int32)
    mni = reg.to_mni(ras[inside])
    inv = np.linalg.inv(atlas.affine)
    av = np.round(mni @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    ok = np.all((av >= 0) & (av < atlas.labels.shape), axis=1)
    vals = np.zeros(len(av), dtype=np.int32)
    vals[ok] = atlas.labels[tuple(av[ok].T)]
    labels[inside] = vals
    labels = labels.reshape(ii.shape)
    img = vol.data[:, :, k]
    fig, ax = plt.subplots(figsize=(6, 7))
    # Radiological convention: the patient's right (+x: array i on this RAS grid) on the viewer's left. The picture
    # used to keep i increasing to the right, a neurological view labelled R on the left.
    ax.imshow(radiological(img), cmap="gray", interpolation="nearest")
    for lab in np.unique(labels[labels > 0]):
        ax.contour(
            radiological(labels == lab).astype(float), levels=[0.5], colors=[plt.cm.tab20(lab % 20)], linewidths=0.9
        )
    for c in cands:
        v = np.linalg.solve(vol.affine[:3, :3], np.asarray(c["center_ras"]) - vol.affine[:3, 3])
        if abs(v[2] - k) <= 2.5:
            col, row = display_xy(v, vol.shape)
            ax.plot(col, row, "o", mfc="none", mec="red", ms=9, mew=1.5)
            ax.text(col + 4, row, c.get("region", ""), color="yellow", fontsize=7)
    ax.text(0.02, 0.5, "R", color="white", transform=ax.transAxes, fontsize=14, va="center")
    ax.text(0.95, 0.5, "L", color="white", transform=ax.transAxes, fontsize=14, va="center")
    ax.set_axis_off()
    ax.set_title(f"MARS atlas on a registered synthetic scan (z = {z_world:.0f} mm, radiological view)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict) -> str:
    """The tables of docs/results.md: agreement per condition, then one confusion matrix per condition."""
    lines = [
        "| condition | microbleeds | class agreement | lobar | deep | infratentorial | region agreement "
        "| vs simulator's class | MNI error median / p95 (mm) | registration s (median / max) | brain Dice min "
        "| failed | wrong class / unknown |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report["conditions"].items():
        pc = c["per_class"]
        cells = [f"{100 * pc[k]:.1f} %" if pc[k] is not None else "-" for k in KNOWN]
        lines.append(
            f"| {name} | {c['microbleeds']} | **{100 * c['agreement']:.1f} %** | {' | '.join(cells)} "
            f"| {100 * c['region_agreement']:.1f} % | {100 * c['agreement_simulator_class']:.1f} % "
            f"| {c['mni_error_mm']['median']} / {c['mni_error_mm']['p95']} "
            f"| {c['seconds']['median']} / {c['seconds']['max']} | {c.get('dice_min', '-')} | {c['failed']} "
            f"| {c.get('wrong', '-')} / {c['unknown']} |"
        )
    for name, c in report["conditions"].items():
        lines += ["", f"Confusion matrix, {name} (rows: truth, columns: predicted):", ""]
        lines += ["| truth \\ predicted | " + " | ".join(CLASSES) + " |", "|---" * (len(CLASSES) + 1) + "|"]
        for t in KNOWN:
            lines.append(f"| {t} | " + " | ".join(str(c["confusion"][t][p]) for p in CLASSES) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=90000, help="seeds never used for training")
    ap.add_argument("--microbleeds", type=int, default=25, help="microbleeds per subject")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--figure", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true", help="only print the tables of an existing --out report")
    ap.add_argument("--crops", action="store_true", help="score fields of view cut through the brain instead")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return

    import SimpleITK as sitk  # noqa: N813

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    rows: dict[str, list[dict]] = {}
    times: dict[str, list[float]] = {}
    status: dict[str, list[str]] = {}
    dice: dict[str, list[float | None]] = {}  # the registration's overlap check, to see its margin
    for n in range(args.subjects):
        seed = args.first_seed + n
        subj = generate_subject(seed, n_microbleeds=args.microbleeds, spacing=1.0)
        rng = np.random.default_rng(seed)
        views = crop_conditions(subj.image, rng) if args.crops else conditions(subj.image, rng)
        for name, vol in views.items():
            # A crop is scored on what it shows; partial-fov also on the extrapolated cut part.
            truth = inside(vol, subj.microbleeds) if args.crops else subj.microbleeds
            cands, block, seconds = locate(vol, truth)
            times.setdefault(name, []).append(seconds)
            status.setdefault(name, []).append(block["status"])
            dice.setdefault(name, []).append(block["registration"].get("dice"))
            for t, c in zip(truth, cands, strict=True):
                err = None
                if c.get("center_mni") is not None:
                    err = float(np.linalg.norm(np.subtract(c["center_mni"], t["center_mni"])))
                rows.setdefault(name, []).append(
                    {
                        "truth": t["mars_location"],
                        "truth_region": t["mars_region"],
                        "sim": t["location"],
                        "pred": c["location"],
                        "region": c["region"],
                        "mni_error": err,
                    }
                )
            if n == 0 and name == "1mm" and args.figure is not None:
                figure(vol, cands, args.figure)
            print(f"{seed} {name:12s} {block['status']:6s} {seconds:5.2f} s  {block['registration']}", flush=True)
    report = {
        "settings": vars(args) | {"out": str(args.out), "figure": str(args.figure)},
        "conditions": {
            name: {
                **summarise_condition(r),
                "seconds": {"median": round(float(np.median(times[name])), 2), "max": round(max(times[name]), 2)},
                "failed": sum(s != "ok" for s in status[name]),
                "dice_min": min((d for d in dice[name] if d is not None), default=None),
            }
            for name, r in rows.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    for name, c in report["conditions"].items():
        print(
            f"{name:12s} agreement {c['agreement']:.3f} per class {c['per_class']} "
            f"regions {c['region_agreement']:.3f} MNI error median {c['mni_error_mm']['median']} mm, "
            f"time median {c['seconds']['median']} s, failed {c['failed']}"
        )


if __name__ == "__main__":
    main()
