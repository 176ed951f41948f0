import sys

from genlab.review.cli import main

sys.exit(main())
