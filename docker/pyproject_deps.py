"""Write the project's runtime requirements from pyproject.toml for the image build, torch apart.

Dockerfile.app installs torch first from its own index, then everything else; stdlib only.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement string."""
    match = NAME.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def split_requirements(pyproject: Path) -> tuple[list[str], list[str]]:
    """(torch requirements, all runtime requirements) from `[project].dependencies`."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in deps if requirement_name(d) == "torch"], list(deps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path, help="the project's pyproject.toml")
    parser.add_argument("out_dir", type=Path, help="writes torch.txt and requirements.txt here")
    args = parser.parse_args()
    torch, everything = split_requirements(args.pyproject)
    if not torch:
        raise SystemExit("pyproject.toml lists no torch requirement")
    (args.out_dir / "torch.txt").write_text("".join(f"{r}\n" for r in torch))
    (args.out_dir / "requirements.txt").write_text("".join(f"{r}\n" for r in everything))


if __name__ == "__main__":
    main()
