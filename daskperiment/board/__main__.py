"""``python -m daskperiment.board``: the same as ``daskperiment board``."""

import sys

from .cli import main

sys.exit(main())
