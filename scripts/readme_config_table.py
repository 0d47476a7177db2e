"""Rewrite the configuration table in README.md from app/config.py (the one source of truth).

    python -m scripts.readme_config_table            # rewrite README.md in place
    python -m scripts.readme_config_table --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.config import REPO_ROOT, with_config_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md", help="the file to update")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the table is out of date")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    fresh = with_config_table(text)
    if args.check:
        print("up to date" if fresh == text else f"{args.readme} is out of date: run this without --check")
        return 0 if fresh == text else 1
    args.readme.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
