"""Image folders: one subfolder per class, named for it, holding that class's pictures.

Each picture becomes the model's `[C, H, W]` input as SPEC §2.3 says (greyscale or RGB,
resized bilinearly, intensity / 255), so that Python clients, the coordinator's test
set and the page prepare a picture alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from coordinator.data.dataset import DataError, Dataset
from coordinator.data.schema import DataSchema

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_classes(root: Path) -> tuple[str, ...]:
    """The class names of an image folder: its subfolders holding pictures, sorted."""
    if not root.is_dir():
        raise DataError(root, None, "not a folder of class subfolders")
    names = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and _pictures(d)))
    if len(names) < 2:
        raise DataError(root, None, f"an image folder holds one subfolder of pictures per class; found {list(names)}")
    return names


def labelled_pictures(root: Path, schema: DataSchema) -> list[tuple[Path, int]]:
    """Every picture under `root`'s class folders with its class index by the schema's class list."""
    index = schema.class_index()
    unknown = [c for c in image_classes(root) if c not in index]
    if unknown:
        raise DataError(root, None, f"folder {unknown[0]!r} is not one of the run's classes {list(index)}")
    return [(picture, index[name]) for name in image_classes(root) for picture in _pictures(root / name)]


def image_dataset(root: Path, schema: DataSchema, input_shape: Sequence[int]) -> Dataset:
    """Every picture under `root`'s class folders, as the model's input; labels by the schema's class list."""
    channels, height, width = input_shape
    pictures = labelled_pictures(root, schema)
    x = np.stack([to_input(picture, channels, height, width) for picture, _ in pictures])
    return Dataset(x, np.asarray([label for _, label in pictures], np.int64))


def to_input(picture: Path, channels: int, height: int, width: int) -> np.ndarray:
    """float32 `[channels, height, width]` in 0..1; a file that is not a picture is a DataError naming it."""
    try:
        with Image.open(picture) as img:
            img.load()
            converted = img.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(picture, None, f"not a readable picture ({exc})") from None
    resized = converted.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, np.float32) / np.float32(255)
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _pictures(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
