"""Safe image loading: confinement to the images root, and refusal of bad or oversized images."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from app.serving.images import ImageInputError, decode_image, load_image_file, resolve_image_path


def png_bytes(size=(8, 8), color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def root(tmp_path):
    images = tmp_path / "images"
    (images / "14").mkdir(parents=True)
    (images / "14" / "14db355d.png").write_bytes(png_bytes())
    (tmp_path / "secret.png").write_bytes(png_bytes(color="blue"))
    return images


def test_relative_path_inside_root_loads(root):
    """A path like the seed's `14/14db355d.jpg` resolves under the root and decodes to RGB."""
    image = load_image_file(root, "14/14db355d.png")
    assert image.size == (8, 8) and image.mode == "RGB"


@pytest.mark.parametrize("bad", ["../secret.png", "14/../../secret.png", "/etc/passwd", "~/x.png", ""])
def test_paths_escaping_root_are_refused_with_400(root, bad):
    """Absolute, `..` and empty paths are refused before anything is opened."""
    with pytest.raises(ImageInputError) as err:
        resolve_image_path(root, bad)
    assert err.value.status == 400
    assert "secret" not in str(err.value) and "passwd" not in str(err.value)


def test_symlink_out_of_root_is_refused(root):
    """A symlink inside the root that points outside it is never followed."""
    os.symlink(root.parent / "secret.png", root / "link.png")
    with pytest.raises(ImageInputError, match="outside the images root") as err:
        load_image_file(root, "link.png")
    assert err.value.status == 400


@pytest.mark.parametrize("name", ["a" * 300 + ".png", "d/" * 600 + "x.png", "x" * 5000])
def test_names_the_file_system_cannot_take_are_400_not_a_crash(root, name):
    """A component over NAME_MAX, a path of many parts and a 5,000-character path are the client's fault: 400."""
    with pytest.raises(ImageInputError) as err:
        load_image_file(root, name)
    assert err.value.status == 400
    assert str(root) not in str(err.value)


def test_a_loop_of_links_is_400(root):
    """A symlink loop inside the root fails to resolve: 400 with a message, no OSError escapes."""
    os.symlink(root / "b", root / "a")
    os.symlink(root / "a", root / "b")
    with pytest.raises(ImageInputError) as err:
        load_image_file(root, "a/x.png")
    assert err.value.status in (400, 404)


def test_missing_file_is_404(root):
    """A path inside the root that names no file answers 404."""
    with pytest.raises(ImageInputError) as err:
        resolve_image_path(root, "14/nope.png")
    assert err.value.status == 404


def test_not_an_image_is_400():
    """Bytes that are no image format are a 400 that says so."""
    with pytest.raises(ImageInputError, match="not an image") as err:
        decode_image(b"hello, not a png")
    assert err.value.status == 400


def test_truncated_image_is_400():
    """A PNG cut in half fails at decode time with a clear message."""
    data = png_bytes(size=(64, 64))
    with pytest.raises(ImageInputError, match="truncated or corrupt") as err:
        decode_image(data[: len(data) // 2])
    assert err.value.status == 400


def test_image_over_pixel_limit_is_413_without_decoding():
    """An image over the pixel limit is refused from its header (a decompression-bomb guard)."""
    data = png_bytes(size=(2000, 2000), color="white")
    with pytest.raises(ImageInputError, match="over the limit") as err:
        decode_image(data, max_pixels=1_000_000)
    assert err.value.status == 413
