"""`git push` without Jenkins: a local bare repository whose post-receive hook runs the pipeline.

`make push-remote` creates it (default .cache/push-remote.git, added to this clone as the remote
`pipeline`). Pushing the deploy branch (`git push pipeline main`) runs the six stages of
`python -m scripts.pipeline` on the pushed commit, in a clean worktree of it, against this clone's
data, model and adapters (the Settings paths); the push prints the stages as they finish.
Each run writes data/pipeline/push-<time>-<commit>/pipeline.log and summary.json.

    python -m infra.push_remote init [--remote-dir DIR] [--name pipeline] [--branch main]
    python -m infra.push_remote hook      (the post-receive hook: `<old> <new> <ref>` lines on stdin)
    python -m infra.push_remote run SHA   (one pipeline run; the hook starts it in the background)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from app.config import REPO_ROOT, Settings

DEFAULT_REMOTE_DIR = REPO_ROOT / ".cache" / "push-remote.git"
DEFAULT_REMOTE_NAME = "pipeline"
DEFAULT_BRANCH = "main"
ZERO_SHA = "0" * 40
LOG_NAME = "pipeline.log"
SUMMARY_NAME = "summary.json"
# The Settings paths a run uses from this clone rather than from the pushed commit's worktree: the
# dataset, the base model and the adapters the running service loads (its CURRENT pointer).
SHARED_PATHS = {"data_dir": "VQA_DATA_DIR", "images_root": "VQA_IMAGES_ROOT", "model_dir": "VQA_MODEL_DIR",
                "adapters_dir": "VQA_ADAPTERS_DIR"}

log = logging.getLogger(__name__)


class PushRemoteError(RuntimeError):
    """The remote could not be created, or a run could not start; the message says why."""


def clean_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without git's hook variables (GIT_DIR=. and friends would redirect every git call)."""
    return {k: v for k, v in (os.environ if environ is None else environ).items() if not k.startswith("GIT_")}


def _git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0 and not check:
        return ""
    if done.returncode != 0:
        raise PushRemoteError(f"`git {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout.strip()


def hook_script(remote_dir: Path, python: str, branch: str) -> str:
    q = shlex.quote
    return (
        "#!/bin/sh\n"
        "# Written by `make push-remote` (infra/push_remote.py): run the pipeline for each pushed commit\n"
        f"# of {branch}. Change that module and run `make push-remote` again rather than this file.\n"
        f"cd {q(str(REPO_ROOT))} && exec {q(python)} -m infra.push_remote hook --git-dir {q(str(remote_dir))} "
        f"--branch {q(branch)}\n"
    )


def init_remote(remote_dir: Path = DEFAULT_REMOTE_DIR, *, branch: str = DEFAULT_BRANCH,
                python: str = sys.executable, remote_name: str | None = DEFAULT_REMOTE_NAME) -> Path:
    """Create (or update) the bare repository and its hook; add it to this clone as `remote_name`."""
    remote_dir = remote_dir.resolve()
    if not (remote_dir / "HEAD").is_file():
        remote_dir.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(remote_dir))
    hook = remote_dir / "hooks" / "post-receive"
    hook.write_text(hook_script(remote_dir, python, branch))
    hook.chmod(0o755)
    if remote_name:
        remotes = _git("remote", cwd=REPO_ROOT).split()
        verb = "set-url" if remote_name in remotes else "add"
        _git("remote", verb, remote_name, str(remote_dir), cwd=REPO_ROOT)
    log.info("push remote ready: %s (git push %s %s runs the pipeline)", remote_dir, remote_name or remote_dir,
             branch)
    return remote_dir


def run_env(settings: Settings, worktree: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The pipeline's environment: the caller's, without git's hook variables, importing the worktree's code,
    with this clone's data, model and adapters."""
    env = clean_env(environ)
    env["PYTHONPATH"] = str(worktree)
    env["PYTHONUNBUFFERED"] = "1"
    for attr, var in SHARED_PATHS.items():
        env[var] = str(Path(getattr(settings, attr)).resolve())
    return env


def run_pipeline(git_dir: Path, sha: str, run_id: str, settings: Settings, *, python: str = sys.executable) -> int:
    """Check out `sha` into a clean worktree, run every stage there, remove the worktree; the exit code of
    `scripts.pipeline`. Runs one at a time per remote (like the Jenkins job's disableConcurrentBuilds)."""
    run_dir = Path(settings.data_dir).resolve() / "pipeline" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(git_dir / "pipeline.lock", "w") as lock, open(run_dir / LOG_NAME, "a", buffering=1) as out:
        fcntl.flock(lock, fcntl.LOCK_EX)
        worktree = Path(tempfile.mkdtemp(prefix=f"vqa-{run_id}-")) / "src"
        try:
            _git("--git-dir", str(git_dir), "worktree", "add", "--quiet", "--detach", str(worktree), sha)
            out.write(f"commit {sha} checked out in {worktree}\n")
            cmd = [python, "-m", "scripts.pipeline", "--run-id", run_id, "--rule", "git-push",
                   "--reason", f"push of {sha[:12]}"]
            code = subprocess.run(cmd, cwd=worktree, env=run_env(settings, worktree), stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False).returncode
        except PushRemoteError as exc:
            out.write(f"{exc}\n")
            code = 1
        finally:
            _git("--git-dir", str(git_dir), "worktree", "remove", "--force", str(worktree), check=False)
            shutil.rmtree(worktree.parent, ignore_errors=True)
            _git("--git-dir", str(git_dir), "worktree", "prune", check=False)
        out.write(f"pipeline exit code {code}; summary: {run_dir / SUMMARY_NAME}\n")
    return code


def follow(log_path: Path, proc: subprocess.Popen[bytes], echo: Callable[[str], None] = print) -> None:
    """Print `log_path` as it grows until `proc` ends (Ctrl-C stops following, not the run)."""
    position = 0
    while True:
        done = proc.poll() is not None
        if log_path.exists():
            with open(log_path, errors="replace") as f:
                f.seek(position)
                chunk = f.read()
                position = f.tell()
            for line in chunk.splitlines():
                echo(line)
        if done:
            return
        time.sleep(0.5)


def handle_push(lines: Iterable[str], git_dir: Path, branch: str, settings: Settings,
                echo: Callable[[str], None] = print) -> int:
    """The post-receive hook: one background run per pushed commit of `branch`, followed to its end."""
    code = 0
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        _old, new, ref = parts
        if ref != f"refs/heads/{branch}":
            echo(f"{ref}: not {branch}, no pipeline run")
            continue
        if new == ZERO_SHA:
            continue
        run_id = f"push-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{new[:8]}"
        run_dir = Path(settings.data_dir).resolve() / "pipeline" / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        echo(f"pipeline run {run_id} for {new[:12]}; log: {run_dir / LOG_NAME}")
        # Its own session, so a Ctrl-C on `git push` stops the watching, not the run.
        proc = subprocess.Popen([sys.executable, "-m", "infra.push_remote", "run", new, "--run-id", run_id,
                                 "--git-dir", str(git_dir)], cwd=REPO_ROOT, env=clean_env(), start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            follow(run_dir / LOG_NAME, proc, echo)
        except KeyboardInterrupt:
            echo(f"stopped watching; run {run_id} goes on (pid {proc.pid}), log: {run_dir / LOG_NAME}")
            return 130
        summary = run_dir / SUMMARY_NAME
        if summary.is_file():
            for result in json.loads(summary.read_text()):
                echo(f"  {result['status']:8} {result['title']}")
        code = code or proc.returncode
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the bare repository and its hook, add it as a remote")
    init.add_argument("--remote-dir", type=Path, default=DEFAULT_REMOTE_DIR, help=f"default: {DEFAULT_REMOTE_DIR}")
    init.add_argument("--name", default=DEFAULT_REMOTE_NAME, help="remote name in this clone (default: pipeline)")
    init.add_argument("--branch", default=DEFAULT_BRANCH, help="the branch whose pushes run the pipeline")
    hook = sub.add_parser("hook", help="post-receive: read `<old> <new> <ref>` lines on stdin")
    hook.add_argument("--git-dir", type=Path, required=True)
    hook.add_argument("--branch", default=DEFAULT_BRANCH)
    run = sub.add_parser("run", help="run the pipeline for one commit of the remote")
    run.add_argument("sha")
    run.add_argument("--git-dir", type=Path, required=True)
    run.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "init":
            init_remote(args.remote_dir, branch=args.branch, remote_name=args.name)
            return 0
        settings = Settings.from_env()
        if args.command == "hook":
            return handle_push(sys.stdin, args.git_dir, args.branch, settings, echo=lambda s: print(s, flush=True))
        return run_pipeline(args.git_dir, args.sha, args.run_id, settings)
    except PushRemoteError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
