"""Script-path entry point: `python watchdog/monitor_feedback_loop.py` runs `python -m watchdog`.

Run as a file, Python puts this folder (not the repo) first on sys.path, where `import watchdog`
could find PyPI's package of that name; the repo root goes first instead.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from watchdog.__main__ import main

    sys.exit(main())
