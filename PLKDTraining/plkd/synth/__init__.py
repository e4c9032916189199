"""Synthetic T2*-weighted GRE / SWI-like subjects with microbleeds and their mimics.

Built on the MNI ICBM152 2009a maps shipped in nilearn's wheel (``pip install plkd[synth]``):
each subject is a randomly deformed brain with randomised contrast, bias field and Rician
noise, microbleeds (labelled) and veins, iron, calcifications and air-tissue dropout
(not labelled). Deterministic per seed.

>>> from plkd.synth import generate_subject
>>> subject = generate_subject(7, n_microbleeds=3)          # doctest: +SKIP
>>> subject.image.shape, len(subject.microbleeds)           # doctest: +SKIP
"""

from plkd.synth.dataset import parse_count, write_dataset
from plkd.synth.subject import SynthSubject, generate_subject, parse_spacing, subject_seed

__all__ = ["SynthSubject", "generate_subject", "parse_count", "parse_spacing", "subject_seed", "write_dataset"]
