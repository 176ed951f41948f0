"""``python -m genlab.metrics PATH_A PATH_B ...``: see :mod:`genlab.metrics.cli`."""

import sys

from genlab.metrics.cli import main

sys.exit(main())
