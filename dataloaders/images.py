"""Reading images: the one reader of RGB files for the datasets and the inference CLIs."""
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ORIENTATION = 0x0112  # the EXIF tag


class InputError(ValueError):
    """An input file that cannot be used; the message names it and what to do."""


def upright(im):
    """The image as it is shown: its EXIF orientation applied (a phone photo is stored sideways and tagged)."""
    return ImageOps.exif_transpose(im) if im.getexif().get(ORIENTATION, 1) != 1 else im


def read_rgb(path, hint="convert it to JPEG/PNG or remove it", error=InputError):
    """H x W x 3 uint8 RGB of the image file ``path``, as shown (EXIF orientation applied); ``error`` (an
    InputError class) naming the file and ``hint`` otherwise."""
    try:
        with Image.open(path) as stored:
            im = upright(stored)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: convert("RGB") would clip to white
                grey = np.asarray(im, dtype=np.int64)
                if grey.min() < 0 or grey.max() > 65535:
                    raise ValueError(f"32-bit integer image with values {grey.min()}..{grey.max()}")
                return np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, axis=2)
            if im.mode == "F":
                raise ValueError("32-bit float image; save it as 8- or 16-bit")
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise error(f"image absent: {path} ({hint})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise error(f"unreadable image {path}: {e} ({hint})") from None
