"""``python -m lumbar_bench.cli``."""

import sys

from lumbar_bench.cli import main

sys.exit(main())
