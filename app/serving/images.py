"""Safe image loading: paths confined to the images root, size and pixel limits enforced.

Every error is an `ImageInputError` whose `status` is the HTTP code the edge should answer
with and whose message tells the user what to change, without revealing server paths.
"""

from __future__ import annotations

import functools
import io
import os
import stat
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from app.config import DEFAULT_MAX_IMAGE_PIXELS

MAX_PATH_CHARS = 1024  # longer is no file name a client means; the file system's limit is near 4096


class ImageInputError(ValueError):
    """The image reference or bytes cannot be used; `status` is the HTTP code to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def resolve_image_path(images_root: str | Path, image_path: str) -> Path:
    """The file `image_path` names under `images_root`, or an error if it would leave it.

    Absolute paths, `..` segments and symlinks that point outside the root are refused
    before anything is opened, so a refused path is never read and never revealed.
    """
    if not isinstance(image_path, str) or not image_path.strip():
        raise ImageInputError("`image_path` must be a non-empty string relative to the images root")
    if "\x00" in image_path:
        raise ImageInputError("`image_path` contains a NUL byte")
    if os.path.isabs(image_path) or image_path.startswith(("~", "\\")):
        raise ImageInputError("`image_path` must be relative to the images root, not absolute")
    parts = Path(image_path).parts
    if ".." in parts:
        raise ImageInputError("`image_path` must not contain `..`; give a path inside the images root")
    if len(image_path) > MAX_PATH_CHARS:
        raise ImageInputError(f"`image_path` has {len(image_path)} characters; the limit is {MAX_PATH_CHARS}")
    root = _real_root(str(images_root))
    candidate = os.path.realpath(os.path.join(root, image_path))  # follows symlinks
    if not candidate.startswith(root.rstrip(os.sep) + os.sep):
        raise ImageInputError("`image_path` resolves outside the images root (symlink); use a file inside it")
    try:
        mode = os.stat(candidate).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = 0
    except OSError as exc:  # a name too long for the file system, a loop of links: the client's path, not our fault
        raise ImageInputError(f"`image_path` cannot be used as a file name here ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise ImageInputError(f"no image at `{image_path}` under the images root", status=404)
    return Path(candidate)


@functools.lru_cache(maxsize=16)
def _real_root(images_root: str) -> str:
    # Resolved once per root, not per request (a realpath walks every component of the path).
    return os.path.realpath(images_root)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, name: str = "image") -> Image.Image:
    """Decode image bytes fully into an RGB image, refusing bombs and broken files."""
    if not data:
        raise ImageInputError(f"the {name} is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageInputError(
                    f"the {name} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
                    status=413,
                )
            probe.load()  # decodes everything: truncated files fail here, not later
            return probe if probe.mode == "RGB" else probe.convert("RGB")
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"the {name} is too large to decode safely: {exc}", status=413) from exc
    except UnidentifiedImageError as exc:
        raise ImageInputError(f"the {name} is not an image format this service reads (PNG, JPEG, ...)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"the {name} is truncated or corrupt ({exc.__class__.__name__})") from exc


def load_image_file(images_root: str | Path, image_path: str, *,
                    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Resolve `image_path` safely under the root and decode it."""
    path = resolve_image_path(images_root, image_path)
    try:
        data = path.read_bytes()
    except OSError as exc:  # removed or made unreadable since it was resolved
        raise ImageInputError(f"the image `{image_path}` cannot be read ({exc.strerror or exc})", status=404) from exc
    return decode_image(data, max_pixels=max_pixels, name=f"image `{image_path}`")


def open_dataset_image(images_root: str | Path, image_path: str) -> Image.Image:
    """Images for training and evaluation go through the same checks as requests."""
    return load_image_file(images_root, image_path, max_pixels=DEFAULT_MAX_IMAGE_PIXELS)
