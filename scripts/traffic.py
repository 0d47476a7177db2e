"""Send traffic from the dataset to the service, optionally drifted and with feedback.

Example: 300 colour-inverted requests at 20/s, with the true answer posted as feedback for
half of them (which the watchdog's accuracy rule and the retraining pipeline use):
  python -m scripts.traffic --count 300 --rate 20 --drift invert --feedback 0.5
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.config import Settings
from app.learning.data import CSV_NAME, load_rows
from app.logsetup import configure_logging
from app.simulation.distortions import DRIFTS
from app.simulation.traffic import send_traffic


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=settings.service_url, help="service base URL (default VQA_SERVICE_URL)")
    parser.add_argument("--csv", type=Path, default=Path(settings.data_dir) / CSV_NAME)
    parser.add_argument("--split", default="train", help="which rows to draw from ('' = all)")
    parser.add_argument("--images-root", type=Path, default=Path(settings.images_root))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second (0 = as fast as possible)")
    parser.add_argument("--drift", choices=sorted(DRIFTS), default=None)
    parser.add_argument("--feedback", type=float, default=0.0, help="share of answers to send feedback for")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    rows = load_rows(args.csv, split=args.split or None)
    result = send_traffic(args.url, rows, args.images_root, count=args.count, rate=args.rate, drift=args.drift,
                          feedback_share=args.feedback, seed=args.seed)
    print(json.dumps(result.summary(), indent=2))
    return 0 if result.answered else 1


if __name__ == "__main__":
    raise SystemExit(main())
