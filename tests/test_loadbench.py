"""The load benchmark's arithmetic: reading hey's summary and forming the ratios (no load is generated here)."""

from __future__ import annotations

import pytest

from app.serving.loadbench import Bare, Level, parse_hey, ratios

HEY_SUMMARY = """
Summary:
  Total:	20.0105 secs
  Requests/sec:	312.4517

Latency distribution:
  10% in 0.0312 secs
  25% in 0.0398 secs
  50% in 0.0471 secs
  75% in 0.0553 secs
  90% in 0.0640 secs
  95% in 0.0702 secs
  99% in 0.0911 secs

Status code distribution:
  [200]	6240 responses
  [503]	12 responses

Error distribution:
  [3]	Post "http://127.0.0.1:5000/predict": context deadline exceeded (Client.Timeout exceeded)
"""


def test_hey_summary_gives_throughput_percentiles_and_every_failure():
    """req/s, p50 and p95 in ms, and non-2xx = other statuses plus requests that got no answer."""
    level = parse_hey(HEY_SUMMARY, workers=2, concurrency=16, seconds=20)
    assert (level.requests_per_s, level.p50_ms, level.p95_ms) == (312.5, 47.1, 70.2)
    assert level.non_2xx == 12 + 3


def test_ratios_compare_with_the_best_bare_model_run():
    """The ceiling uses the fastest batch-16 run and the c1 overhead the fastest batch-1 run, on the seed request."""
    bare = [Bare("seed request", 1, 1, 50.0, 20.0, 25.0), Bare("seed request", 2, 1, 40.0, 18.0, 30.0),
            Bare("seed request", 1, 16, 300.0, 53.0, 60.0), Bare("seed request", 2, 16, 200.0, 80.0, 90.0),
            Bare("test split", 1, 16, 999.0, 1.0, 1.0)]
    levels = [Level(1, 1, 20, 50.0, 19.0, 22.0, 0), Level(1, 16, 20, 240.0, 60.0, 85.5, 0),
              Level(1, 50, 60, 250.0, 190.0, 230.0, 0)]
    assert ratios(bare, levels) == {"ceiling ratio": 0.8, "p95@16 / p50@1": 4.5,
                                    "p50@1 - bare batch-1 p50 (ms)": pytest.approx(1.0), "non-2xx at c50": 0}
