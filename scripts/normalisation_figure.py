"""A PNG of one microbleed as the networks see it, with the dark end of the intensities clipped or not.

``plkd.normalise.normalise_intensity`` z-scores the brain after clipping it to two brain
percentiles. The legacy 0.5-99.5 gave every voxel darker than the brain's 0.5th percentile (veins,
iron, dropout and the microbleeds themselves) one value; new runs clip only the bright end
(0-99.5; docs/results.md, step 11). Left and middle: an axial close-up of the microbleed under
each, in the radiological convention (patient's right on the left), on one grey scale; right: the
z-scores along the right-left line through its centre, with the legacy floor dashed.

    python scripts/normalisation_figure.py DATA SUBJECT MICROBLEED_ID OUT.png

``DATA`` is a ``plkd synth`` folder (its manifest names the microbleed's centre and diameter).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from plkd.display import Ring, draw_slice, to_ras
from plkd.figures import pyplot, save_figure
from plkd.normalise import CLIP_PERCENTILES, LEGACY_CLIP_PERCENTILES, normalise_intensity
from plkd.volumes import load_volume

#: Grey scale (brain z-scores) shared by both panels, so equal values look equal.
WINDOW = (-6.0, 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("subject")
    parser.add_argument("microbleed", type=int)
    parser.add_argument("out")
    args = parser.parse_args()
    entry = json.loads((args.data / "manifest.json").read_text(encoding="utf-8"))["subjects"][args.subject]
    mb = next(m for m in entry["microbleeds"] if m["id"] == args.microbleed)
    image = load_volume(args.data / entry["files"]["image"])
    mask = load_volume(args.data / entry["files"]["mask"]).data > 0
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    profiles = {}
    for col, (clip, name) in enumerate(((LEGACY_CLIP_PERCENTILES, "legacy"), (CLIP_PERCENTILES, "now"))):
        z = normalise_intensity(image.data, mask, clip)
        vol = to_ras(z, image.affine)
        k = vol.slice_index("axial", mb["center_ras"])
        ring = Ring(mb["center_ras"], 4.0, "r")
        draw_slice(axes[col], vol, "axial", k, window=WINDOW, rings=[ring], centre_ras=mb["center_ras"],
                   half_width_mm=15)  # fmt: skip
        centre = np.round(vol.to_voxel(mb["center_ras"])).astype(int)
        core = float(vol.data[tuple(centre)])
        floor = float(z[mask].min())
        axes[col].set_title(
            f"{name}: clip {clip[0]:g}-{clip[1]:g} %\ncore z = {core:.2f}, darkest brain voxel z = {floor:.2f}",
            fontsize=9,
        )
        line = vol.data[:, centre[1], centre[2]]
        x_mm = (np.arange(line.size) - centre[0]) * vol.spacing[0]
        near = np.abs(x_mm) <= 12
        profiles[name] = (x_mm[near], line[near], floor)
    for name, (x_mm, line, floor) in profiles.items():
        (handle,) = axes[2].plot(x_mm, line, marker=".", label=f"{name}")
        if name == "legacy":
            axes[2].axhline(floor, color=handle.get_color(), linestyle="--", linewidth=0.8, label="legacy floor")
    axes[2].invert_xaxis()  # radiological, as the panels: the patient's right (+) on the left
    axes[2].set_xlabel("mm to the patient's right of the centre (R on the left)")
    axes[2].set_ylabel("brain z-score")
    axes[2].legend(fontsize=8)
    axes[2].set_title("right-left line through the centre", fontsize=9)
    size = f"{mb['diameter_mm']:.1f} mm, {mb.get('model', '')}"
    fig.suptitle(f"{args.subject} microbleed {mb['id']} ({size}) as the networks see it")
    fig.tight_layout()
    save_figure(fig, args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
