"""Which adapter is live, and what each model and adapter directory says about itself.

`CURRENT` in the adapters folder names the promoted adapter; every worker of every replica
watches it, so promotion is one atomic file write (`promote_adapter`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from app.config import Settings

CURRENT_POINTER = "CURRENT"
MODEL_INFO_FILE = "vqa_model.json"
ADAPTER_INFO_FILE = "vqa_adapter.json"
NO_ADAPTER = "none"


def read_info(directory: Path, name: str) -> dict:
    """The JSON metadata file `name` of a model or adapter directory ({} if absent)."""
    path = Path(directory) / name
    return json.loads(path.read_text()) if path.is_file() else {}


def current_adapter_dir(settings: Settings) -> Path | None:
    """The adapter to serve: `VQA_ADAPTER_DIR` if set, else what `<adapters>/CURRENT` names."""
    if settings.adapter_dir:
        return Path(settings.adapter_dir)
    pointer = Path(settings.adapters_dir) / CURRENT_POINTER
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    return Path(settings.adapters_dir) / name if name else None


def promote_adapter(adapters_dir: Path, adapter_dir: Path) -> None:
    """Point `CURRENT` at `adapter_dir` atomically (write a temp file, then rename)."""
    adapters_dir = Path(adapters_dir)
    adapters_dir.mkdir(parents=True, exist_ok=True)
    tmp = adapters_dir / f".{CURRENT_POINTER}.{threading.get_ident()}.tmp"
    tmp.write_text(Path(adapter_dir).name + "\n")
    tmp.replace(adapters_dir / CURRENT_POINTER)
