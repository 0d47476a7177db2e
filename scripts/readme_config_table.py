"""Rewrite the configuration table in README.md from app/config.py (the one source of truth)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import REPO_ROOT, markdown_table  # noqa: E402

START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def main() -> int:
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{markdown_table()}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
