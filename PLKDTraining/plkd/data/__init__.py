"""Data sets on disk (VALDO, ``plkd synth`` output, plain folders) and subject-level splits."""

from plkd.data.datasets import LAYOUTS, Subject, find_subjects, load_subject
from plkd.data.splits import kfold_split, read_splits, write_splits

__all__ = ["LAYOUTS", "Subject", "find_subjects", "kfold_split", "load_subject", "read_splits", "write_splits"]
