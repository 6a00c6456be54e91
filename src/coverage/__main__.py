"""``python -m coverage``: the coverage-planner command line."""
import sys

from .cli import main

sys.exit(main())
