"""`python -m backend ...` runs the ccbridge command line."""

import sys

if sys.argv[1:2] == ["statusline"]:  # Claude Code runs it every second: skip the command line's imports
    from backend.statusline import main as statusline_main

    sys.exit(statusline_main(sys.argv[2:]))

from backend.cli import main  # noqa: E402

sys.exit(main())
