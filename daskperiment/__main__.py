"""``python -m daskperiment``: the same as the ``daskperiment`` command."""

import sys

from .cli import main

sys.exit(main())
