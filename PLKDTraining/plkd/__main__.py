"""``python -m plkd`` runs the command line."""

import sys

from plkd.cli import main

sys.exit(main())
