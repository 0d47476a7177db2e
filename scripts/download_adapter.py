"""Download a PEFT LoRA adapter for the BLIP VQA model from the Hub into the adapters folder.

Pass `--promote` to make it the one the service serves (it writes `<adapters>/CURRENT`;
running services switch to it without a restart). Offline, it exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.config import Settings
from app.logsetup import configure_logging
from app.model.hub import HubUnavailableError, download_snapshot
from app.model.registry import promote_adapter


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo-id", required=True, help="Hub repository holding adapter_config.json + weights")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--adapters-dir", type=Path, default=Path(settings.adapters_dir))
    parser.add_argument("--promote", action="store_true", help="serve it: point CURRENT at it")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    out = args.adapters_dir / args.repo_id.replace("/", "--")
    try:
        path = download_snapshot(args.repo_id, out, revision=args.revision)
    except HubUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not (path / "adapter_config.json").is_file():
        print(f"error: {args.repo_id} has no adapter_config.json; it is not a PEFT adapter", file=sys.stderr)
        return 2
    if args.promote:
        promote_adapter(args.adapters_dir, path)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
