"""Images in OpenAI vision messages: ``image_url`` parts carrying base64 ``data:`` URLs, decoded with limits.

The server is offline, so remote ``http(s)://`` URLs are refused; so are malformed URLs, payloads that are not
base64, bytes PIL cannot read as an image, and images larger than ``max_pixels`` (checked from the header,
before the pixels are decoded).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re

_DATA_URL = re.compile(r"data:(?P<mime>image/[A-Za-z0-9.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)", re.S)


class BadImage(ValueError):
    """An image part the server cannot use (the message says why)."""


def decode_data_url(url: str, max_pixels: int = 4096 * 4096):
    """A PIL RGB image from a ``data:image/...;base64,...`` URL, or :class:`BadImage`."""
    from PIL import Image, UnidentifiedImageError

    if url.startswith(("http://", "https://")):
        raise BadImage("remote image URLs are not fetched (this server is offline); send the image as a base64 "
                       "data: URL")
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        raise BadImage("an image_url must be a data URL like data:image/png;base64,<data>")
    try:
        raw = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("the image data URL is not valid base64") from None
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
        if width * height > max_pixels:
            raise BadImage(f"the image is {width}x{height}; this server takes at most {max_pixels} pixels")
        image.load()
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise BadImage(f"the image data is not a readable image ({exc.__class__.__name__})") from None
    return image.convert("RGB")


def image_key(image) -> int:
    """A negative id standing for this image's content in a session's token history (prefix matching)."""
    digest = hashlib.sha1(image.tobytes() + repr(image.size).encode()).digest()
    return -1 - int.from_bytes(digest[:7], "big")
