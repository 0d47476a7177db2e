"""Fetching the real model and adapters from the Hugging Face Hub into data/.

Offline, it fails fast with a message that says how to use the small local model instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LARGE_MODEL = "Salesforce/blip-vqa-capfilt-large"
OFFLINE_HINT = (
    "The Hugging Face Hub cannot be reached from here. To run without it, use the small model "
    "that ships in models/blip-vqa-small (the default VQA_MODEL_DIR), or rebuild it with "
    "`python -m scripts.build_base_model`."
)


class HubUnavailableError(ValueError):
    """The Hub could not be reached or the repository could not be fetched."""


def download_snapshot(repo_id: str, local_dir: Path, *, revision: str | None = None,
                      allow_patterns: list[str] | None = None, timeout: float = 10.0) -> Path:
    """Download `repo_id` into `local_dir` (resumable; a progress bar per file) and return it."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout)))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    local_dir = Path(local_dir)
    try:
        path = snapshot_download(repo_id=repo_id, revision=revision, local_dir=local_dir,
                                 allow_patterns=allow_patterns)
    except RepositoryNotFoundError as exc:
        raise HubUnavailableError(f"{repo_id} does not exist on the Hub or needs a token (HF_TOKEN)") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise HubUnavailableError(f"could not download {repo_id}: {exc.__class__.__name__}. {OFFLINE_HINT}") from exc
    log.info("downloaded %s to %s", repo_id, path)
    return Path(path)
