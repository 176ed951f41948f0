"""`python -m genlab.codec`: the same as the `genlab-codec` console script."""

import sys

from genlab.codec.cli import main

sys.exit(main())
