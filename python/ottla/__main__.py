"""``python -m ottla``: the same as the ``ottla`` console script."""

import sys

from ottla.cli import main

sys.exit(main())
