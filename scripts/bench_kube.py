"""Measure the Kubernetes test harness (infra/kube): build times, disk, and cluster start time.

    python -m scripts.bench_kube [--cold] [--starts 3]

--cold builds into an empty temporary cache (Go module and build caches, binaries: what a fresh clone
pays, downloads included) and deletes it afterwards; without it the project's .cache/kube is used.
Then: a second build (stamps only), a forced rebuild with Go's caches warm (what a machine that kept
.cache/kube/go but lost the binaries pays), the disk each part takes, and `--starts` cluster starts
(processes up, kwok node Ready, metrics API Available) each followed by a stop.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from app.logsetup import configure_logging
from infra.kube.build import CACHE_ROOT, bin_dir, build, report
from infra.kube.cluster import KubeCluster


def timed_build(cache_root: Path, *, force: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the Go processes): on a shared machine the CPU time is the steadier number."""
    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    build(force=force, cache_root=cache_root)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.monotonic() - started, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="build into an empty temporary cache first")
    parser.add_argument("--starts", type=int, default=3, help="cluster starts to time (default 3)")
    args = parser.parse_args(argv)
    configure_logging()
    tmp = Path(tempfile.mkdtemp(prefix="bench-kube-", dir=CACHE_ROOT.parent)) if args.cold else None
    cache_root = tmp or CACHE_ROOT
    rows: list[tuple[str, str]] = []
    try:
        wall, cpu = timed_build(cache_root)
        what = "cold build (empty caches, downloads included)" if args.cold else "build"
        rows.append((what, f"{wall:.0f} s wall, {cpu:.0f} s CPU"))
        rows.append(("second build (stamps only)", f"{timed_build(cache_root)[0]:.2f} s wall"))
        wall, cpu = timed_build(cache_root, force=True)
        rows.append(("forced rebuild, Go caches warm", f"{wall:.0f} s wall, {cpu:.0f} s CPU"))
        for what, size in report(cache_root):
            rows.append((f"disk: {what}", f"{size / 2**20:.0f} MiB"))
        starts = []
        for i in range(args.starts):
            with tempfile.TemporaryDirectory(prefix="bench-kube-cluster-") as workdir:
                cluster = KubeCluster(Path(workdir), bin=bin_dir(cache_root))
                cluster.start()
                cluster.stop()
                starts.append(cluster.startup_seconds)
                print(f"cluster start {i + 1}: {cluster.startup_seconds:.1f} s", flush=True)
        if starts:
            rows.append((f"cluster start to ready (median of {len(starts)})", f"{statistics.median(starts):.1f} s"))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print("\n| what | measured |\n| --- | --- |")
    for what, value in rows:
        print(f"| {what} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
