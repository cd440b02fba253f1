"""Reading images: the one reader of RGB files for the datasets and the inference CLIs."""
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """An input file that cannot be used; the message names it and what to do."""


def read_rgb(path, hint="convert it to JPEG/PNG or remove it", error=InputError):
    """H x W x 3 uint8 RGB of the image file ``path``; ``error`` (an InputError class) naming the file and
    ``hint`` otherwise."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise error(f"image absent: {path} ({hint})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise error(f"unreadable image {path}: {e} ({hint})") from None
