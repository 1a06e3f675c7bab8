"""Image folders for `contrastkit.pipelines.data`: finding `root/<class>/<image>` files, picking a
split's folder, checking every file's header at start, decoding each file as RGB with
torchvision.io and resizing it to a square."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".gif", ".webp")
SKIP_FLAG = "data.skip_bad_images=true"  # the config switch the messages point to
_MAX_LISTED = 20  # unreadable files named in one message; the rest are counted


class UnreadableImagesError(ValueError):
    """Image files of a folder cannot be read; the message lists them and the fix."""


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


def find_image_files(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[Path]]:
    """Class names (sorted sub-folder names), (file, label) pairs of the image files (sorted per
    class, searched recursively) and the other files found, sorted: files whose extension is not
    one of IMAGE_EXTENSIONS. Hidden files (".DS_Store") are neither."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>)"
        )
    samples: list[tuple[Path, int]] = []
    others: list[Path] = []
    for label, name in enumerate(classes):
        found = sorted(
            p for p in (root / name).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        files = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise FileNotFoundError(
                f"class folder {root / name} holds no image files with extensions {IMAGE_EXTENSIONS}"
            )
        samples.extend((path, label) for path in files)
        others.extend(p for p in found if p.suffix.lower() not in IMAGE_EXTENSIONS)
    return classes, samples, others


def non_image_note(root: Path, others: Sequence[Path]) -> str:
    """One warning line counting the files of an image folder that are not read, with an example."""
    extensions = " ".join(IMAGE_EXTENSIONS)
    return (
        f"warning: skipped {len(others)} non-image file{'s' if len(others) != 1 else ''} under "
        f"{root} (only {extensions} are read), e.g. {others[0].relative_to(root)}"
    )


def unreadable_images(
    paths: Sequence[Path], *, progress: bool = False, desc: str = "checking images"
) -> list[tuple[Path, str]]:
    """(path, reason) of every file in `paths` that cannot be read as an image, in order.

    Cheap, without decoding every image: PIL opens each file's header (format, size), which finds
    empty files, files that are not images and cut-short headers. A PNG is then read whole and
    its chunk checksums verified (torchvision's PNG decoder can crash the process on damaged
    data, so it must never see such a file); for JPEG, GIF and WebP the end of the file is checked
    (end-of-image marker, trailer, declared size), which finds truncated files (an interrupted
    copy or download). Only a file that fails that end check or has another format is decoded
    with torchvision, the decoder training uses, to be sure. Pixel data damaged in the middle
    of a complete JPEG is found only when it is decoded. progress: show a tqdm bar (on a
    terminal only).
    """
    from PIL import Image
    from tqdm.auto import tqdm

    bad: list[tuple[Path, str]] = []
    with warnings.catch_warnings():
        # Pillow's pixel-count limit guards its own decoder; torchvision decodes such files.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for path in tqdm(paths, desc=desc, unit="file", disable=None if progress else True):
            problem = _file_problem(path)
            if problem is not None:
                bad.append((path, problem))
    return bad


def _file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as an image, or None when it can (see `unreadable_images`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        try:
            with Image.open(path) as image:
                image_format = image.format
                if image_format == "PNG":
                    image.verify()  # every chunk's CRC, up to IEND
                    return None
        except Image.DecompressionBombError:
            image_format = None  # a huge image: let the decoder judge it
        if image_format is not None and _ends_complete(path, image_format, size):
            return None
        _decode_rgb(path)
    except UnidentifiedImageError:
        return "not an image file PIL can identify"
    except ValueError as error:  # from _decode_rgb
        return str(error).removeprefix(f"cannot decode image {path}: ")
    except Exception as error:  # a header PIL cannot parse: its plugins raise many types
        text = str(error).splitlines()[0] if str(error) else ""
        return text[:160] or type(error).__name__
    return None


_FILE_ENDS = {"JPEG": b"\xff\xd9", "GIF": b"\x3b"}  # end-of-image marker, trailer


def _ends_complete(path: Path, image_format: str, size: int) -> bool:
    """Whether the file's last bytes are the end its format requires (False: not sure)."""
    with open(path, "rb") as file:
        if image_format == "WEBP":  # RIFF: bytes 4..8 hold the size of what follows them
            file.seek(4)
            return int.from_bytes(file.read(4), "little") + 8 <= size
        file.seek(max(0, size - 2))
        tail = file.read()
    return image_format in _FILE_ENDS and tail.endswith(_FILE_ENDS[image_format])


def unreadable_error(
    root: Path, bad: Sequence[tuple[Path, str]], total: int
) -> UnreadableImagesError:
    """The error listing unreadable files (the first 20 and a count of the rest) and the fix."""
    lines = [f"{len(bad)} of {total} image files under {root} cannot be read:"]
    lines += [f"  {_relative(path, root)}: {reason}" for path, reason in bad[:_MAX_LISTED]]
    if len(bad) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED} more")
    lines.append(f"fix or remove them, or set {SKIP_FLAG} to train without them")
    return UnreadableImagesError("\n".join(lines))


def skipped_note(root: Path, bad: Sequence[tuple[Path, str]], total: int) -> str:
    """One warning line counting the unreadable files skipped with data.skip_bad_images."""
    path, reason = bad[0]
    return (
        f"warning: skipped {len(bad)} unreadable image file{'s' if len(bad) != 1 else ''} of "
        f"{total} under {root} ({SKIP_FLAG}), e.g. {_relative(path, root)}: {reason}"
    )


def _relative(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def note(message: str) -> None:
    """Print a warning line on stderr (the CLI's channel for notes that do not stop a run)."""
    print(message, file=sys.stderr, flush=True)


def resize_square(images: Tensor, size: int) -> Tensor:
    """uint8 (..., 3, H, W) -> uint8 (..., 3, size, size): shorter side to `size` (bilinear, antialias),
    then a center crop of the longer side.

    The same pixels as torchvision's `resize(images, [size], antialias=True)` + `center_crop`
    (tested), without importing torchvision (seconds at start-up): on the CPU both are torch's
    uint8 antialiased bilinear interpolation; elsewhere it runs in float and rounds.
    """
    import torch
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_height, new_width = (new_long, size) if width <= height else (size, new_long)
    flat = images.reshape(-1, *images.shape[-3:])
    if (new_height, new_width) == (height, width):
        resized = flat
    elif flat.device.type == "cpu" and flat.dtype == torch.uint8:
        resized = F.interpolate(
            flat, size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=True
        )
    else:
        resized = F.interpolate(
            flat.float(), size=(new_height, new_width), mode="bilinear", align_corners=False,
            antialias=True,
        ).round_().clamp_(0, 255).to(images.dtype)  # fmt: skip
    top = round((new_height - size) / 2.0)
    left = round((new_width - size) / 2.0)
    cropped = resized[..., top : top + size, left : left + size]
    return cropped.reshape(*images.shape[:-2], size, size)


def decode_image(path: Path, size: int) -> Tensor:
    """Decode one image file as RGB and resize it to uint8 (3, size, size)."""
    return resize_square(_decode_rgb(path), size)


def _decode_rgb(path: Path) -> Tensor:
    """uint8 (3, H, W): the file decoded as RGB by torchvision.io; ValueError naming the file and
    the decoder's reason (without its C++ source location) when it cannot be decoded."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as _decode

    try:
        return _decode(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        reason = re.sub(r"^.*\.cpp:\d+,?\s*", "", str(error).strip().splitlines()[-1] or "")
        raise ValueError(f"cannot decode image {path}: {reason or error}") from None
