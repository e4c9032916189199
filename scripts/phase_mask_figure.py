"""A PNG of one synthetic SWI subject with and without the phase-mask weighting (``plkd synth --phase-mask``).

Top row: an axial slice through the largest microbleed, plain SWI magnitude and phase-mask weighted,
in the radiological convention (patient's right on the left) with the microbleed ringed; bottom row:
close-ups of that microbleed and of a calcification, which the weighting leaves as it was. The same
seed gives the same anatomy, lesions and noise draws either way, so only the weighting differs.

    python scripts/phase_mask_figure.py OUT.png [--seed 8]
"""

from __future__ import annotations

import argparse

from plkd.display import Ring, display_range, draw_slice, to_ras
from plkd.figures import pyplot, save_figure
from plkd.synth import generate_subject


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    plain = generate_subject(args.seed, n_microbleeds=8, modality="SWI")
    masked = generate_subject(args.seed, n_microbleeds=8, modality="SWI", phase_mask=True)
    weighting = masked.params["phase_mask"]
    mb = max(plain.microbleeds, key=lambda m: m["diameter_mm"])
    calc = next((m for m in plain.mimics if m["kind"] == "calcification"), None)
    mask = to_ras(plain.mask.data, plain.mask.affine).data > 0
    plt = pyplot()
    fig, axes = plt.subplots(2, 2 if calc is None else 3, figsize=(11, 7.5), squeeze=False)
    for col, (subject, name) in enumerate(
        (
            (plain, "SWI magnitude"),
            (masked, f"phase-mask weighted (n {weighting['power']}, κ {weighting['phase_rad']} rad)"),
        )
    ):
        vol = to_ras(subject.image.data, subject.image.affine)
        window = display_range(vol.data[mask])
        k = vol.slice_index("axial", mb["center_ras"])
        ring = Ring(mb["center_ras"], 6.0, "r")
        draw_slice(axes[0][col], vol, "axial", k, window=window, rings=[ring])
        axes[0][col].set_title(name, fontsize=9)
        draw_slice(axes[1][col], vol, "axial", k, window=window, centre_ras=mb["center_ras"], half_width_mm=18)
        axes[1][col].set_title(f"microbleed {mb['diameter_mm']:.1f} mm", fontsize=9)
    if calc is not None:
        for row, subject in enumerate((plain, masked)):
            vol = to_ras(subject.image.data, subject.image.affine)
            k = vol.slice_index("axial", calc["center_ras"])
            window = display_range(vol.data[mask])
            draw_slice(axes[row][2], vol, "axial", k, window=window, centre_ras=calc["center_ras"], half_width_mm=18)
            axes[row][2].set_title(
                f"calcification ({calc.get('site', '')}), {'weighted' if row else 'plain'}", fontsize=9
            )
    fig.suptitle(f"plkd synth --modality SWI --phase-mask (seed {args.seed}): paramagnetic darker, calcification not")
    save_figure(fig, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
