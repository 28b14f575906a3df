"""`python -m backend ...` runs the ccbridge command line."""

import sys

from backend.cli import main

sys.exit(main())
