"""Image folders for `contrastkit.pipelines.data`: finding `root/<class>/<image>` files, picking a
split's folder, decoding each file as RGB with torchvision.io and resizing it to a square."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".gif", ".webp")


def image_folder_root(data_dir: Path, split: str | None) -> Path:
    """The class-folder root of `split` under `data_dir` (see `load_dataset` for the rule)."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"image folder data_dir={str(data_dir)!r} is not a directory")
    if split is None:
        return data_dir
    if split not in ("train", "test", "val"):
        raise ValueError(f"split must be 'train', 'test' or 'val' for image_folder, got {split!r}")
    split_dirs = [
        data_dir / name for name in ("train", "test", "val") if (data_dir / name).is_dir()
    ]
    if not split_dirs:
        if split == "train":
            return data_dir
        raise FileNotFoundError(
            f"image_folder split {split!r}: {data_dir} has no 'test' or 'val' sub-folder, so it is read as "
            f"the class folders of the train split only; add {data_dir / 'test'} (or 'val') for a held-out split"
        )
    candidates = ["train"] if split == "train" else [split, "val" if split == "test" else "test"]
    for name in candidates:
        if (data_dir / name).is_dir():
            return data_dir / name
    checked = ", ".join(str(data_dir / name) for name in candidates)
    raise FileNotFoundError(f"image_folder split {split!r} not found: checked {checked}")


def find_image_files(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (file, label) pairs, files sorted per class, searched recursively."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>)"
        )
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise FileNotFoundError(
                f"class folder {root / name} holds no image files with extensions {IMAGE_EXTENSIONS}"
            )
        samples.extend((path, label) for path in files)
    return classes, samples


def resize_square(images: Tensor, size: int) -> Tensor:
    """uint8 (..., 3, H, W) -> uint8 (..., 3, size, size): shorter side to `size` (bilinear, antialias),
    then a center crop of the longer side."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    from torchvision.transforms.v2 import functional as F

    resized = F.resize(images, [size], antialias=True)
    return F.center_crop(resized, [size, size])


def decode_image(path: Path, size: int) -> Tensor:
    """Decode one image file as RGB and resize it to uint8 (3, size, size)."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as _decode

    try:
        image = _decode(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error
    return resize_square(image, size)
