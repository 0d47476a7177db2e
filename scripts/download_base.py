"""Download the real BLIP VQA model (default Salesforce/blip-vqa-capfilt-large) into data/.

Then serve it with `VQA_MODEL_DIR=data/models/blip-vqa-capfilt-large make up`. Offline, it
exits with status 2 and says how to use the small local model instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.config import Settings
from app.logsetup import configure_logging
from app.model.hub import LARGE_MODEL, HubUnavailableError, download_snapshot


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo-id", default=LARGE_MODEL, help=f"Hub repository (default {LARGE_MODEL})")
    parser.add_argument("--revision", default=None, help="branch, tag or commit to pin")
    parser.add_argument("--out", type=Path, default=None,
                        help="target directory (default: VQA_DATA_DIR/models/<repo name>)")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    out = args.out or Path(settings.data_dir) / "models" / args.repo_id.split("/")[-1]
    try:
        path = download_snapshot(args.repo_id, out, revision=args.revision)
    except HubUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
