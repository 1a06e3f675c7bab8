"""Tests for contrastkit.pipelines.data: the CIFAR, image-folder and CSV readers against direct numpy/PIL
loading, class-balanced subsets, and the (seed, epoch) batch index rule of DeviceBatches and LoaderBatches."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import require_shared_data
from torch.utils.data import Dataset

from contrastkit.pipelines.data import (
    DATASET_NAMES,
    DeviceBatches,
    ImageFolderDataset,
    InMemoryDataset,
    LoaderBatches,
    UnreadableImagesError,
    balanced_subset,
    epoch_permutation,
    load_dataset,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
CIFAR_DIR = SHARED_DATA / "cifar10"
COVTYPE_CSV = SHARED_DATA / "covtype" / "covtype_train15k.csv.gz"
# torchvision >= 0.29 deprecates its image codecs in favour of torchcodec; they still work.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities:DeprecationWarning"
)
CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
COVTYPE_OPTIONS = {"label_column": "Cover_Type", "drop_columns": ["Id"], "val_start": 11340}


def _need(path: Path) -> Path:
    require_shared_data(path)
    return path


@pytest.fixture(scope="module")
def cifar_test_npz() -> tuple[np.ndarray, np.ndarray]:
    """The real CIFAR-10 test split loaded with plain numpy (HWC), as the data README shows."""
    with np.load(_need(CIFAR_DIR / "cifar10_test.npz")) as archive:
        return archive["x"], archive["y"]


# ----------------------------------------------------------------------------------------------
# CIFAR readers
# ----------------------------------------------------------------------------------------------
def test_cifar10_npz_test_split_matches_numpy(
    cifar_test_npz: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = cifar_test_npz
    data = load_dataset("cifar10", CIFAR_DIR, "test")
    assert data.kind == "image" and data.classes == CIFAR10_NAMES and data.num_classes == 10
    assert data.inputs.shape == (10000, 3, 32, 32) and data.inputs.dtype == torch.uint8
    assert data.inputs.is_contiguous()
    assert data.labels.dtype == torch.int64
    assert torch.bincount(data.labels, minlength=10).tolist() == [1000] * 10
    assert data.labels[:20].tolist() == y[:20].tolist()
    # NCHW pixel (n, c, h, w) is the README's HWC pixel (n, h, w, c).
    assert torch.equal(data.inputs[:8], torch.from_numpy(x[:8]).permute(0, 3, 1, 2))
    assert int(data.inputs[5, 2, 7, 11]) == int(x[5, 7, 11, 2])


def test_cifar10_npz_found_from_parent_folder(
    cifar_test_npz: tuple[np.ndarray, np.ndarray],
) -> None:
    data = load_dataset("cifar10", SHARED_DATA, "test")  # data_dir/cifar10/*.npz
    assert torch.equal(data.labels, torch.from_numpy(cifar_test_npz[1]))


def test_cifar10_npz_train_split() -> None:
    _need(CIFAR_DIR / "cifar10_train_1.npz")
    data = load_dataset("cifar10", CIFAR_DIR, "train")
    assert data.inputs.shape == (50000, 3, 32, 32)
    assert torch.bincount(data.labels).tolist() == [5000] * 10
    # data_batch_1's class counts, quoted in the data README.
    assert torch.bincount(data.labels[:10000]).tolist() == [
        1005,
        974,
        1032,
        1016,
        999,
        937,
        1030,
        1001,
        1025,
        981,
    ]


def _pickle(path: Path, content: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(content, file)


def _rows(images_hwc: np.ndarray) -> np.ndarray:
    """HWC images -> the pickle layout: one row of 3072 bytes per image, all R then G then B."""
    return np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), -1))


def _write_cifar10_pickles(folder: Path, x: np.ndarray, y: np.ndarray) -> None:
    """A tiny cifar-10-batches-py: data_batch_k holds images 3(k-1)..3k-1, test_batch images 15..18."""
    folder.mkdir(parents=True)
    for k in range(1, 6):
        part = slice(3 * (k - 1), 3 * k)
        _pickle(
            folder / f"data_batch_{k}",
            {"data": _rows(x[part]), "labels": y[part].tolist(), "batch_label": "b"},
        )
    _pickle(folder / "test_batch", {"data": _rows(x[15:19]), "labels": y[15:19].tolist()})
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 3})


def test_cifar10_pickle_reader(
    tmp_path: Path, cifar_test_npz: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = cifar_test_npz
    _write_cifar10_pickles(tmp_path / "cifar-10-batches-py", x, y)
    expected = torch.from_numpy(x[:15]).permute(0, 3, 1, 2)
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train = load_dataset("cifar10", data_dir, "train")
        assert train.inputs.shape == (15, 3, 32, 32) and train.inputs.dtype == torch.uint8
        assert torch.equal(train.inputs, expected)
        assert train.labels.tolist() == y[:15].tolist() and train.classes == CIFAR10_NAMES
    test = load_dataset("cifar10", tmp_path, "test")
    assert torch.equal(test.inputs, torch.from_numpy(x[15:19]).permute(0, 3, 1, 2))
    assert test.labels.tolist() == y[15:19].tolist()


def test_cifar_pickles_win_over_npz(
    tmp_path: Path, cifar_test_npz: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = cifar_test_npz
    _write_cifar10_pickles(tmp_path / "cifar-10-batches-py", x, y)
    np.savez(tmp_path / "cifar10_test.npz", x=x[100:102], y=y[100:102])
    assert len(load_dataset("cifar10", tmp_path, "test")) == 4  # from test_batch, not the npz


def test_cifar100_pickle_reader(
    tmp_path: Path, cifar_test_npz: tuple[np.ndarray, np.ndarray]
) -> None:
    x = cifar_test_npz[0]
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [0, 99, 42, 7, 63, 99]
    names = [f"class_{i:02d}" for i in range(100)]
    _pickle(folder / "train", {"data": _rows(x[:6]), "fine_labels": fine, "coarse_labels": [1] * 6})
    _pickle(
        folder / "test", {"data": _rows(x[6:8]), "fine_labels": [5, 6], "coarse_labels": [0, 0]}
    )
    _pickle(
        folder / "meta",
        {"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]},
    )
    for data_dir in (tmp_path, folder):
        train = load_dataset("cifar100", data_dir, "train")
        assert torch.equal(train.inputs, torch.from_numpy(x[:6]).permute(0, 3, 1, 2))
        assert train.labels.tolist() == fine and train.classes == names and train.num_classes == 100
    assert load_dataset("cifar100", tmp_path, "test").labels.tolist() == [5, 6]


def test_cifar_missing_path_lists_formats_and_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("cifar10", missing, "train")
    message = str(error.value)
    assert "torchvision pickle format" in message and "npz folder format" in message
    assert f"{missing / 'cifar-10-batches-py'}: directory does not exist" in message
    assert f"{missing / 'cifar10'}: directory does not exist" in message
    assert (
        "cifar10_train_5.npz" in message
        and "data_batch_5" in message
        and "download=True" in message
    )

    (tmp_path / "cifar10_test.npz").write_bytes(b"")
    (tmp_path / "cifar10_train_2.npz").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("cifar10", tmp_path, "train")
    message = str(error.value)
    assert (
        str(tmp_path / "cifar10_train_1.npz") in message
        and str(tmp_path / "cifar10_train_2.npz") not in message
    )

    with pytest.raises(FileNotFoundError, match="cifar-100-python: directory does not exist"):
        load_dataset("cifar100", tmp_path, "test")


def test_cifar_corrupt_files_raise_value_error(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "cifar10_test.npz",
        x=np.zeros((2, 32, 32, 3), np.float32),
        y=np.zeros(2, np.int64),
    )
    with pytest.raises(ValueError, match=r"float32 and shape \(2, 32, 32, 3\)"):
        load_dataset("cifar10", tmp_path, "test")
    np.savez(
        tmp_path / "cifar10_test.npz", x=np.zeros((2, 32, 32, 3), np.uint8), y=np.array([0, 10])
    )
    with pytest.raises(ValueError, match=r"labels span \[0, 10\]"):
        load_dataset("cifar10", tmp_path, "test")
    np.savez(
        tmp_path / "cifar10_test.npz", x=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(3, np.int64)
    )
    with pytest.raises(ValueError, match="2 images but labels of shape"):
        load_dataset("cifar10", tmp_path, "test")
    (tmp_path / "cifar10_test.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a valid CIFAR npz file"):
        load_dataset("cifar10", tmp_path, "test")

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "test").write_bytes(b"\x80\x04garbage")
    _pickle(folder / "meta", {"fine_label_names": [str(i) for i in range(100)]})
    with pytest.raises(ValueError, match="not a valid CIFAR pickle file"):
        load_dataset("cifar100", tmp_path, "test")
    _pickle(folder / "test", {"data": np.zeros((2, 3000), np.uint8), "fine_labels": [0, 1]})
    with pytest.raises(ValueError, match=r"expected uint8 \(N, 3072\)"):
        load_dataset("cifar100", tmp_path, "test")


def test_cifar_download_calls_torchvision_when_nothing_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cifar_test_npz: tuple[np.ndarray, np.ndarray]
) -> None:
    import torchvision.datasets

    calls = []

    class FakeCIFAR10:  # stands in for the network: writes the folder torchvision would download
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            _write_cifar10_pickles(Path(root) / "cifar-10-batches-py", *cifar_test_npz)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    data = load_dataset("cifar10", tmp_path, "test", download=True)
    assert calls == [(str(tmp_path), False, True)]
    assert data.labels.tolist() == cifar_test_npz[1][15:19].tolist()
    load_dataset("cifar10", tmp_path, "train", download=True)
    assert len(calls) == 1  # found on disk now: no second download


def test_cifar_image_size_resizes(
    cifar_test_npz: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = cifar_test_npz
    np.savez(tmp_path / "cifar10_test.npz", x=x[:4], y=y[:4])
    same = load_dataset("cifar10", tmp_path, "test", image_size=32)
    assert torch.equal(same.inputs, torch.from_numpy(x[:4]).permute(0, 3, 1, 2))
    small = load_dataset("cifar10", tmp_path, "test", image_size=16)
    assert small.inputs.shape == (4, 3, 16, 16) and small.inputs.dtype == torch.uint8
    # Antialiased 2x downscale of a smooth image stays close to the 2x2 block mean.
    block_mean = (
        torch.from_numpy(x[:4])
        .permute(0, 3, 1, 2)
        .float()
        .unflatten(2, (16, 2))
        .unflatten(4, (16, 2))
    )
    block_mean = block_mean.mean(dim=(3, 5))
    assert (small.inputs.float() - block_mean).abs().mean() < 8


# ----------------------------------------------------------------------------------------------
# Image folders
# ----------------------------------------------------------------------------------------------
def _write_png(path: Path, image_hwc: np.ndarray) -> None:
    from torchvision.io import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    tensor = torch.from_numpy(image_hwc)
    write_png(tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor[None], str(path))


def _pil_reference(path: Path, size: int) -> torch.Tensor:
    """Independent resize: PIL bilinear (antialiased) to shorter side `size`, then a center crop."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    width, height = image.size
    if width <= height:
        new_width, new_height = size, int(size * height / width)
    else:
        new_width, new_height = int(size * width / height), size
    image = image.resize((new_width, new_height), Image.BILINEAR)
    left, top = round((new_width - size) / 2), round((new_height - size) / 2)
    cropped = np.array(image.crop((left, top, left + size, top + size)))
    return torch.from_numpy(cropped).permute(2, 0, 1)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """root/train/{cat,dog}, root/val/{cat,dog}: random PNGs of different sizes, one grayscale."""
    rng = np.random.default_rng(0)
    shapes = {"train/cat": [(20, 40), (37, 23), (24, 24)], "train/dog": [(50, 50), (16, 24)], "val/cat": [(30, 20)],
              "val/dog": [(12, 12)]}  # fmt: skip
    for folder, sizes in shapes.items():
        for i, (height, width) in enumerate(sizes):
            _write_png(
                tmp_path / folder / f"{i}.png",
                rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            )
    _write_png(tmp_path / "train/dog/gray.png", rng.integers(0, 256, (18, 18), dtype=np.uint8))
    (tmp_path / "train/dog/notes.txt").write_text("not an image, ignored")
    return tmp_path


def test_image_folder_load_matches_pil(image_tree: Path) -> None:
    data = load_dataset("image_folder", image_tree, "train", image_size=16)
    assert data.classes == ["cat", "dog"] and data.kind == "image"
    assert data.inputs.shape == (6, 3, 16, 16) and data.inputs.dtype == torch.uint8
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    files = [image_tree / "train/cat" / f for f in ("0.png", "1.png", "2.png")]
    files += [image_tree / "train/dog" / f for f in ("0.png", "1.png", "gray.png")]
    for image, path in zip(data.inputs, files, strict=True):
        assert (image.int() - _pil_reference(path, 16).int()).abs().max() <= 1, path
    gray = data.inputs[5]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_image_folder_splits(image_tree: Path) -> None:
    test = load_dataset(
        "image_folder", image_tree, "test", image_size=8
    )  # no test/: falls back to val/
    assert test.labels.tolist() == [0, 1] and test.inputs.shape == (2, 3, 8, 8)
    flat = image_tree / "train"  # class folders directly: the train split only
    assert len(load_dataset("image_folder", flat, "train", image_size=8)) == 6
    with pytest.raises(FileNotFoundError, match="no 'test' or 'val' sub-folder"):
        load_dataset("image_folder", flat, "test", image_size=8)
    with pytest.raises(ValueError, match="image_size is required"):
        load_dataset("image_folder", image_tree, "train")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_dataset("image_folder", image_tree / "missing", "train", image_size=8)


def test_image_folder_bad_contents(tmp_path: Path) -> None:
    _write_png(tmp_path / "a/0.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "b").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        ImageFolderDataset(tmp_path, 4)
    (tmp_path / "b/broken.png").write_bytes(b"\x89PNG but truncated")
    # Found when the folder is opened, not when a batch first reads the file.
    with pytest.raises(UnreadableImagesError, match=r"(?s)1 of 2 image files.*b/broken\.png"):
        ImageFolderDataset(tmp_path, 4)


def _encoded(kind: str, seed: int, size: int = 24) -> bytes:
    """A random RGB image encoded as "png" or "jpg" by torchvision (independent of PIL)."""
    from torchvision.io import encode_jpeg, encode_png

    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.integers(0, 256, (3, size, size + seed % 5), dtype=np.uint8))
    return bytes((encode_png if kind == "png" else encode_jpeg)(image).numpy().tobytes())


def _damaged_png(seed: int) -> bytes:
    """A PNG with a good header and end but flipped bytes in its pixel data (IDAT): the damage
    torchvision's PNG decoder crashes the process on, so only the checksum may find it."""
    data = bytearray(_encoded("png", seed))
    start = data.index(b"IDAT") + 8
    for i in range(start, start + 6):
        data[i] ^= 0xFF
    return bytes(data)


def _bad_huffman_jpeg(seed: int) -> bytes:
    """A JPEG whose header PIL opens and whose end marker is in place, but whose Huffman table
    (the DHT segment, which PIL skips) is garbage: only decoding it fails."""
    data = bytearray(_encoded("jpg", seed))
    start = data.index(b"\xff\xc4") + 5  # marker, length (2), table class/id
    data[start : start + 16] = b"\xff" * 16
    return bytes(data)


@pytest.fixture
def folder_with_bad_files(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """root/{a,b,c}: good PNGs and JPEGs in a and c, and 24 unreadable files of five kinds in a
    and b (b holds nothing else). Returns (root, good files, bad files) as paths under root."""
    good, bad = [], []
    for i in range(6):
        for folder in ("a", "c"):
            name = f"{folder}/good{i}.{'png' if i % 2 else 'jpg'}"
            (tmp_path / name).parent.mkdir(exist_ok=True)
            (tmp_path / name).write_bytes(_encoded("png" if i % 2 else "jpg", seed=i))
            good.append(name)
    makers = [
        ("empty{}.png", lambda i: b""),
        ("text{}.jpg", lambda i: b"not an image at all"),
        ("cut{}.png", lambda i: _encoded("png", i)[: len(_encoded("png", i)) // 2]),
        ("cut{}.jpg", lambda i: _encoded("jpg", i)[:-10]),  # cut in the pixel data
        ("flipped{}.png", _damaged_png),
    ]
    for i in range(24):
        pattern, make = makers[i % len(makers)]
        name = f"{'ab'[i % 2]}/{pattern.format(i)}"
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(make(i))
        bad.append(name)
    return tmp_path, sorted(good), sorted(bad)


def test_unreadable_images_are_all_found_at_start(
    folder_with_bad_files: tuple[Path, list[str], list[str]],
) -> None:
    root, _, bad = folder_with_bad_files
    with pytest.raises(UnreadableImagesError) as error:
        ImageFolderDataset(root, 8)
    lines = str(error.value).splitlines()
    assert lines[0] == f"24 of 36 image files under {root} cannot be read:"
    listed = [line.strip().split(":")[0] for line in lines[1:-2]]
    # The first 20 in the folder's order (class, then file name), the rest counted.
    in_order = sorted(bad, key=lambda name: (name.split("/")[0], name))
    assert listed == in_order[:20] and lines[-2] == "  ... and 4 more"
    assert "data.skip_bad_images=true" in lines[-1]
    reasons = dict(line.strip().split(": ", 1) for line in lines[1:-2])
    assert reasons["a/empty0.png"] == "empty file (0 bytes)"
    assert reasons["a/text6.jpg"] == "not an image file PIL can identify"
    assert reasons["a/cut8.jpg"] == "Image is incomplete or truncated"  # torchvision's words
    assert "checksum" in reasons["a/flipped4.png"]
    # Same check, same list through load_dataset (the in-memory path).
    with pytest.raises(UnreadableImagesError, match="24 of 36 image files"):
        load_dataset("image_folder", root, "train", image_size=8)


def test_skip_bad_images_trains_on_the_rest_with_one_line(
    folder_with_bad_files: tuple[Path, list[str], list[str]], capsys: pytest.CaptureFixture
) -> None:
    root, good, bad = folder_with_bad_files
    folder = ImageFolderDataset(root, 8, skip_bad_images=True)
    assert sorted(str(path.relative_to(root)) for path, _ in folder.samples) == good
    assert sorted(str(path.relative_to(root)) for path, _ in folder.skipped) == bad
    # Class b lost every file but keeps its index, so labels agree with other splits.
    assert folder.classes == ["a", "b", "c"] and folder.labels.tolist() == [0] * 6 + [2] * 6
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"warning: skipped 24 unreadable image files of 36 under {root} (data.skip_bad_images=true)"
    )

    data = load_dataset("image_folder", root, "train", image_size=8, skip_bad_images=True)
    assert data.labels.tolist() == folder.labels.tolist() and data.num_classes == 3
    for image, (path, _) in zip(data.inputs, folder.samples, strict=True):
        assert (image.int() - _pil_reference(path, 8).int()).abs().max() <= 2, path
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # again one line
    load_dataset("image_folder", root, "train", image_size=8, skip_bad_images=True, verbose=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="skip_bad_images=True is only for image_folder"):
        load_dataset("cifar10", root, skip_bad_images=True)


def test_non_image_files_are_counted_in_one_warning(
    image_tree: Path, capsys: pytest.CaptureFixture
) -> None:
    (image_tree / "train/cat/scan.tif").write_bytes(b"II*\x00")
    (image_tree / "train/cat/deep").mkdir()
    (image_tree / "train/cat/deep/labels.csv").write_text("a,b\n")
    (image_tree / "train/dog/.DS_Store").write_bytes(b"\x00")  # hidden: neither image nor note
    folder = ImageFolderDataset(image_tree, 8, split="train")
    expected = ["train/cat/deep/labels.csv", "train/cat/scan.tif", "train/dog/notes.txt"]
    assert [str(p.relative_to(image_tree)) for p in folder.non_image_files] == expected
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"warning: skipped 3 non-image files under {image_tree / 'train'} "
        "(only .jpg .jpeg .png .gif .webp are read), e.g. cat/deep/labels.csv"
    ]
    assert len(folder) == 6  # the images are all still there
    ImageFolderDataset(image_tree, 8, split="train", verbose=False)
    assert capsys.readouterr().err == ""


def test_pixels_that_fail_only_at_decode_name_the_file_or_are_replaced(
    image_tree: Path, capsys: pytest.CaptureFixture
) -> None:
    (image_tree / "train/dog/3.jpg").write_bytes(_bad_huffman_jpeg(seed=3))  # sorts before gray
    folder = ImageFolderDataset(image_tree, 8, split="train")  # passes the start-up check
    index = [p.name for p, _ in folder.samples].index("3.jpg")
    with pytest.raises(ValueError, match=r"cannot decode image .*3\.jpg: .*data\.skip_bad_images"):
        folder[index]
    # The in-memory path decodes every file at start, so it lists the file there.
    with pytest.raises(
        UnreadableImagesError, match=r"(?s)1 of 7 image files.*3\.jpg: Bogus Huffman"
    ):
        load_dataset("image_folder", image_tree, "train", image_size=8)

    # Read by a DataLoader worker: the same one-line message, not the worker's traceback.
    loader = LoaderBatches(folder, 7, seed=0, num_workers=1)
    with pytest.raises(ValueError) as error:
        list(loader.epoch(0))
    assert str(error.value).startswith("cannot decode image ") and "3.jpg" in str(error.value)
    assert "Traceback" not in str(error.value) and len(str(error.value).splitlines()) == 1

    capsys.readouterr()
    skipping = ImageFolderDataset(image_tree, 8, split="train", skip_bad_images=True)
    image, label = skipping[index]
    expected_image, expected_label = skipping[index + 1]  # the next file stands in
    assert torch.equal(image, expected_image) and label == expected_label
    skipping[index]
    err = [line for line in capsys.readouterr().err.splitlines() if "3.jpg" in line]
    assert len(err) == 1 and "replaced by the next image" in err[0]  # once per file


# ----------------------------------------------------------------------------------------------
# Tabular CSV
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def covtype_raw() -> np.ndarray:
    return np.loadtxt(_need(COVTYPE_CSV), delimiter=",", skiprows=1, dtype=np.int64)


def test_covtype_documented_split(covtype_raw: np.ndarray) -> None:
    train = load_dataset("tabular", COVTYPE_CSV, "train", **COVTYPE_OPTIONS)
    test = load_dataset("tabular", COVTYPE_CSV, "test", **COVTYPE_OPTIONS)
    assert train.kind == "tabular" and train.inputs.dtype == torch.float32
    assert train.inputs.shape == (11340, 54) and test.inputs.shape == (3780, 54)
    assert train.classes == [str(c) for c in range(1, 8)]
    assert (
        torch.bincount(train.labels).tolist() == [1620] * 7
        and torch.bincount(test.labels).tolist() == [540] * 7
    )
    assert torch.equal(train.labels, torch.from_numpy(covtype_raw[:11340, 55] - 1))

    continuous = train.inputs[:, :10].double()
    assert continuous.mean(0).abs().max() < 1e-5
    assert (continuous.std(0, unbiased=False) - 1).abs().max() < 1e-5
    # The README's numpy recipe, computed independently, for both splits.
    features = covtype_raw[:, 1:55].astype(np.float64)
    mean, std = features[:11340, :10].mean(0), features[:11340, :10].std(0)
    expected = features.copy()
    expected[:, :10] = (features[:, :10] - mean) / std
    np.testing.assert_allclose(train.inputs.numpy(), expected[:11340], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(test.inputs.numpy(), expected[11340:], rtol=1e-6, atol=1e-5)
    assert torch.equal(
        train.inputs[:, 10:], torch.from_numpy(features[:11340, 10:]).float()
    )  # binary untouched


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    text = "\n".join([header, *rows]) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


SMALL_ROWS = [
    "1,0,5.0,b,10",
    "2,1,7.0,a,11",
    "3,1,6.0,b,12",
    "4,0,9.0,c,13",
    "5,0,1.0,a,14",
    "6,1,2.0,c,15",
]


def test_tabular_small_csv(tmp_path: Path) -> None:
    plain = _write_csv(tmp_path / "t.csv", "Id,flag,x,kind,z", SMALL_ROWS)
    options = {"label_column": "kind", "drop_columns": ["Id"], "val_start": 4}
    train = load_dataset("tabular", plain, "train", **options)
    assert train.classes == ["a", "b", "c"] and train.labels.tolist() == [1, 0, 1, 2]
    x_train = np.array([5.0, 7.0, 6.0, 9.0])
    z_train = np.array([10.0, 11.0, 12.0, 13.0])
    expected = np.stack(
        [
            [0, 1, 1, 0],
            (x_train - x_train.mean()) / x_train.std(),
            (z_train - z_train.mean()) / z_train.std(),
        ],
        1,
    )
    np.testing.assert_allclose(train.inputs.numpy(), expected, rtol=1e-6)
    test = load_dataset("tabular", plain, "test", **options)
    assert test.labels.tolist() == [0, 2]
    np.testing.assert_allclose(
        test.inputs[:, 1].numpy(),
        (np.array([1.0, 2.0]) - x_train.mean()) / x_train.std(),
        rtol=1e-6,
    )

    gz = _write_csv(tmp_path / "t.csv.gz", "Id,flag,x,kind,z", SMALL_ROWS)
    assert torch.equal(load_dataset("tabular", gz, "train", **options).inputs, train.inputs)
    raw = load_dataset("tabular", plain, "train", **options, standardize="none")
    np.testing.assert_array_equal(raw.inputs.numpy(), np.stack([[0, 1, 1, 0], x_train, z_train], 1))
    scaled_all = load_dataset("tabular", plain, "train", **options, standardize="all")
    assert abs(float(scaled_all.inputs[:, 0].mean())) < 1e-6  # the 0/1 column is scaled too

    default = load_dataset("tabular", plain, "train", drop_columns=["kind"])  # label: last column
    assert default.classes == [str(v) for v in range(10, 16)] and default.inputs.shape == (6, 3)


def test_tabular_val_fraction_is_seeded(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "t.csv", "a,b,y", [f"{i},{i * i % 7},{i % 2}" for i in range(40)])
    train = load_dataset(
        "tabular", path, "train", val_fraction=0.25, split_seed=3, standardize="none"
    )
    test = load_dataset(
        "tabular", path, "test", val_fraction=0.25, split_seed=3, standardize="none"
    )
    assert len(train) == 30 and len(test) == 10
    rows = sorted(train.inputs[:, 0].long().tolist() + test.inputs[:, 0].long().tolist())
    assert rows == list(range(40))  # a partition of the rows
    again = load_dataset(
        "tabular", path, "test", val_fraction=0.25, split_seed=3, standardize="none"
    )
    other = load_dataset(
        "tabular", path, "test", val_fraction=0.25, split_seed=4, standardize="none"
    )
    assert torch.equal(again.inputs, test.inputs) and not torch.equal(other.inputs, test.inputs)


def test_tabular_bad_options(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "t.csv", "Id,flag,x,kind,z", SMALL_ROWS)
    with pytest.raises(
        ValueError, match=r"unknown column\(s\) \['Kind'\]; available columns: \['Id', 'flag'"
    ):
        load_dataset("tabular", path, label_column="Kind")
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['ID'\]"):
        load_dataset("tabular", path, drop_columns=["ID"])
    with pytest.raises(ValueError, match="feature columns must be numeric"):
        load_dataset("tabular", path, label_column="x")
    with pytest.raises(ValueError, match="needs val_start or val_fraction"):
        load_dataset("tabular", path, "test", label_column="kind")
    with pytest.raises(ValueError, match="label value 'c' does not occur in the train split"):
        load_dataset("tabular", path, "test", label_column="kind", val_start=3)
    with pytest.raises(ValueError, match=r"unknown tabular option\(s\) \['val_rows'\]"):
        load_dataset("tabular", path, val_rows=3)
    with pytest.raises(ValueError, match=r"val_start must be an int in 1\.\.5"):
        load_dataset("tabular", path, val_start=6, label_column="kind")
    with pytest.raises(ValueError, match="standardize must be one of"):
        load_dataset("tabular", path, label_column="kind", standardize="zscore")
    with pytest.raises(ValueError, match="only for the 'tabular' dataset"):
        load_dataset("cifar10", tmp_path, label_column="kind")
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_dataset("tabular", tmp_path / "missing.csv")
    _write_csv(tmp_path / "nan.csv", "a,b,y", ["1,2,0", "3,nan,1"])
    with pytest.raises(ValueError, match="line 3, column 'b': value nan is not finite"):
        load_dataset("tabular", tmp_path / "nan.csv")
    _write_csv(tmp_path / "no_label.csv", "a,b,y", ["1,2,0", "3,4,"])
    with pytest.raises(ValueError, match="line 3: the label column 'y' is empty"):
        load_dataset("tabular", tmp_path / "no_label.csv")
    with pytest.raises(ValueError, match="delimiter must be a single character"):
        load_dataset("tabular", path, label_column="kind", delimiter=", ")
    _write_csv(tmp_path / "ragged.csv", "a,b,y", ["1,2,0", "3,1"])
    with pytest.raises(ValueError, match="line 3 has 2 fields, the header has 3"):
        load_dataset("tabular", tmp_path / "ragged.csv")


def test_tabular_messages_name_the_line_the_column_and_the_file(tmp_path: Path) -> None:
    # A blank cell: the line as an editor numbers it (header = line 1) and the column's name.
    blank = _write_csv(tmp_path / "blank.csv", "a,b,y", ["1,2,0", "3,4,1", "5,,0", "7,8,1"])
    assert blank.read_text().splitlines()[3] == "5,,0"  # line 4, 1-based
    with pytest.raises(ValueError, match=r"blank\.csv line 4, column 'b': the cell is empty"):
        load_dataset("tabular", blank)
    word = _write_csv(tmp_path / "word.csv", "a,b,y", ["1,2,0", "3,x4,1"])
    with pytest.raises(ValueError, match=r"line 3, column 'b': the cell is 'x4'; feature columns"):
        load_dataset("tabular", word)

    fake = tmp_path / "fake.csv.gz"
    fake.write_text("a,b,y\n1,2,0\n3,4,1\n")  # plain text named .gz
    with pytest.raises(ValueError, match=r"fake\.csv\.gz is not a gzip file"):
        load_dataset("tabular", fake)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(("a,b,y\n" + "1,2,0\n" * 500).encode())[:40])
    with pytest.raises(ValueError, match=r"cut\.csv\.gz is a damaged gzip file"):
        load_dataset("tabular", cut)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,b,y\n1,2,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv is not UTF-8 text"):
        load_dataset("tabular", latin)

    header = _write_csv(tmp_path / "header.csv", "a,b,y", [])
    with pytest.raises(
        ValueError, match=r"header\.csv needs .* data row; it has only a header line"
    ):
        load_dataset("tabular", header)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="; the file is empty"):
        load_dataset("tabular", tmp_path / "empty.csv")


def test_balanced_subset_errors_name_the_setting() -> None:
    labels = torch.arange(40) % 10
    with pytest.raises(
        ValueError, match=r"^data\.train_subset=7 is smaller than the number of classes \(10\)"
    ):
        balanced_subset(labels, 7, seed=0, name="data.train_subset")
    with pytest.raises(ValueError, match=r"^data\.train_subset=41 is larger than the dataset"):
        balanced_subset(labels, 41, seed=0, name="data.train_subset")
    with pytest.raises(ValueError, match=r"^size=7 is smaller"):  # the library default
        balanced_subset(labels, 7, seed=0)


def test_load_dataset_rejects_unknown_names(tmp_path: Path) -> None:
    assert DATASET_NAMES == ("cifar10", "cifar100", "image_folder", "tabular")
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("svhn", tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("cifar10", tmp_path, "val")
    with pytest.raises(ValueError, match="download=True is only supported"):
        load_dataset("image_folder", tmp_path, image_size=8, download=True)


# ----------------------------------------------------------------------------------------------
# InMemoryDataset and balanced_subset
# ----------------------------------------------------------------------------------------------
def test_in_memory_dataset_subset_and_validation() -> None:
    data = InMemoryDataset(
        torch.arange(12.0).view(6, 2), torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], "tabular"
    )
    part = data.subset(torch.tensor([4, 0, 4]))
    assert part.inputs.tolist() == [
        [8.0, 9.0],
        [0.0, 1.0],
        [8.0, 9.0],
    ] and part.labels.tolist() == [1, 0, 1]
    assert part.classes == ["a", "b", "c"] and len(part) == 3 and data.to("cpu").num_classes == 3
    with pytest.raises(ValueError, match=r"indices must lie in 0..5"):
        data.subset(torch.tensor([6]))
    with pytest.raises(ValueError, match="1-D int64"):
        data.subset(torch.tensor([0.0]))
    with pytest.raises(ValueError, match=r"image inputs must be torch.uint8 \(N, C, H, W\)"):
        InMemoryDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"], "image")
    with pytest.raises(ValueError, match=r"labels must lie in 0..1"):
        InMemoryDataset(torch.zeros(2, 3), torch.tensor([0, 2]), ["a", "b"], "tabular")
    with pytest.raises(ValueError, match=r"labels must be int64 of shape \(2,\)"):
        InMemoryDataset(torch.zeros(2, 3), torch.tensor([0, 1, 1]), ["a", "b"], "tabular")
    with pytest.raises(ValueError, match="kind must be one of"):
        InMemoryDataset(torch.zeros(2, 3), torch.tensor([0, 1]), ["a", "b"], "text")


def test_balanced_subset_counts_and_determinism() -> None:
    labels = torch.tensor([2] * 30 + [0] * 10 + [5] * 20)[
        torch.randperm(60, generator=torch.Generator().manual_seed(0))
    ]
    chosen = balanced_subset(labels, 23, seed=7)
    assert chosen.dtype == torch.int64 and len(chosen) == 23
    assert torch.equal(chosen, chosen.sort().values) and len(chosen.unique()) == 23
    counts = {value: int((labels[chosen] == value).sum()) for value in (0, 2, 5)}
    assert counts == {
        0: 8,
        2: 8,
        5: 7,
    }  # 23 = 3 x 7 + 2: the two smallest label values get one more
    assert torch.equal(balanced_subset(labels, 23, seed=7), chosen)
    assert not torch.equal(balanced_subset(labels, 23, seed=8), chosen)
    assert torch.equal(
        balanced_subset(torch.tensor([0, 1] * 10), 20, seed=3), torch.arange(20)
    )  # size N: all


def test_balanced_subset_errors() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 10)
    with pytest.raises(ValueError, match=r"class 1 has only 3 samples .* needs 4"):
        balanced_subset(labels, 12, seed=0)
    with pytest.raises(ValueError, match="larger than the dataset"):
        balanced_subset(labels, 24, seed=0)
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        balanced_subset(labels, 2, seed=0)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        balanced_subset(labels.float(), 9, seed=0)


def test_balanced_subset_of_real_cifar(cifar_test_npz: tuple[np.ndarray, np.ndarray]) -> None:
    labels = torch.from_numpy(cifar_test_npz[1])
    chosen = balanced_subset(labels, 1505, seed=0)
    assert torch.bincount(labels[chosen]).tolist() == [151] * 5 + [150] * 5


# ----------------------------------------------------------------------------------------------
# DeviceBatches / LoaderBatches
# ----------------------------------------------------------------------------------------------
def _indexed(num_samples: int) -> InMemoryDataset:
    """A dataset whose labels are the sample indices, so batches reveal which samples they hold."""
    inputs = torch.arange(num_samples, dtype=torch.float32)[:, None].repeat(1, 2)
    return InMemoryDataset(
        inputs, torch.arange(num_samples), [str(i) for i in range(num_samples)], "tabular"
    )


def _epoch_labels(
    batches: DeviceBatches | LoaderBatches, epoch: int, start_batch: int = 0
) -> list[list[int]]:
    return [labels.tolist() for _, labels in batches.epoch(epoch, start_batch)]


def test_device_batches_ranks_concatenate_to_one_process_batches() -> None:
    data = _indexed(103)
    single = DeviceBatches(data, 15, seed=11)
    ranks = [DeviceBatches(data, 5, seed=11, rank=r, world_size=3) for r in range(3)]
    assert single.batches_per_epoch == 6 and all(
        b.batches_per_epoch == 6 for b in ranks
    )  # 103 // 15, drop_last
    for epoch in (0, 1):
        expected = _epoch_labels(single, epoch)
        per_rank = [_epoch_labels(b, epoch) for b in ranks]
        for t in range(6):
            assert per_rank[0][t] + per_rank[1][t] + per_rank[2][t] == expected[t]
        flat = [i for batch in expected for i in batch]
        assert len(flat) == 90 and len(set(flat)) == 90
        # Batches follow the documented permutation, and inputs stay paired with labels.
        assert flat == epoch_permutation(103, 11, epoch)[:90].tolist()
    for inputs, labels in ranks[1].epoch(0):
        assert torch.equal(inputs[:, 0].long(), labels) and inputs.dtype == torch.float32


def test_epoch_permutation_depends_only_on_seed_and_epoch() -> None:
    first = epoch_permutation(50, 3, 2)
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(epoch_permutation(50, 3, 2), first)
    assert sorted(first.tolist()) == list(range(50))
    others = [epoch_permutation(50, 3, 3), epoch_permutation(50, 4, 2), epoch_permutation(50, 2, 3)]
    assert all(not torch.equal(first, other) for other in others)
    # Seeds that agree in their low 32 bits still give different permutations.
    assert not torch.equal(epoch_permutation(50, 1, 0), epoch_permutation(50, 2**32 + 1, 0))
    a = _epoch_labels(DeviceBatches(_indexed(40), 8, seed=5), 4)
    b = _epoch_labels(DeviceBatches(_indexed(40), 8, seed=5), 4)
    assert a == b


def test_device_batches_start_batch_resumes_the_same_sequence() -> None:
    batches = DeviceBatches(_indexed(64), 4, seed=9, rank=1, world_size=2)
    full = _epoch_labels(batches, 3)
    assert len(full) == 8
    assert _epoch_labels(batches, 3, start_batch=5) == full[5:]
    assert _epoch_labels(batches, 3, start_batch=8) == []
    assert torch.equal(batches.batch_indices(3), torch.tensor(full))


def test_device_batches_errors() -> None:
    with pytest.raises(
        ValueError,
        match=r"10 samples, fewer than one global batch of 12 \(batch_size 4 x world_size 3\)",
    ):
        DeviceBatches(_indexed(10), 4, seed=0, world_size=3)
    with pytest.raises(ValueError, match=r"rank must be in 0\.\.1"):
        DeviceBatches(_indexed(10), 2, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        DeviceBatches(_indexed(10), 0, seed=0)
    batches = DeviceBatches(_indexed(10), 3, seed=0)
    with pytest.raises(ValueError, match=r"start_batch must be an int in 0..3"):
        batches.epoch(0, start_batch=4)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        batches.epoch(-1)


class _IndexDataset(Dataset):
    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([index, -index], dtype=torch.float32), index


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_batches_yield_the_device_batches_indices(num_workers: int) -> None:
    for rank in (0, 1):
        device = DeviceBatches(_indexed(37), 4, seed=21, rank=rank, world_size=2)
        loader = LoaderBatches(
            _IndexDataset(37), 4, seed=21, rank=rank, world_size=2, num_workers=num_workers
        )
        assert loader.batches_per_epoch == device.batches_per_epoch == 4
        for epoch, start in ((0, 0), (1, 0), (1, 3)):
            assert _epoch_labels(loader, epoch, start) == _epoch_labels(device, epoch, start)
        inputs, labels = next(iter(loader.epoch(2)))
        assert labels.dtype == torch.int64 and torch.equal(inputs[:, 0].long(), labels)


def test_loader_batches_over_an_image_folder(image_tree: Path) -> None:
    folder = ImageFolderDataset(image_tree, 16, split="train")
    in_memory = load_dataset("image_folder", image_tree, "train", image_size=16)
    assert folder.classes == in_memory.classes and torch.equal(folder.labels, in_memory.labels)
    loader = LoaderBatches(folder, 2, seed=1, num_workers=0)
    device = DeviceBatches(in_memory, 2, seed=1)
    pairs = list(zip(loader.epoch(0), device.epoch(0), strict=True))
    assert len(pairs) == 3
    for (x_loader, y_loader), (x_device, y_device) in pairs:
        assert x_loader.shape == (2, 3, 16, 16) and x_loader.dtype == torch.uint8
        assert torch.equal(x_loader, x_device) and torch.equal(y_loader, y_device)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((5, 3, 32, 32), 16), ((2, 3, 40, 30), 21), ((3, 30, 40), 21), ((4, 3, 17, 50), 8),
     ((2, 3, 32, 32), 48), ((1, 3, 33, 31), 32)],
)  # fmt: skip
def test_resize_square_gives_torchvisions_pixels(shape: tuple[int, ...], size: int) -> None:
    # The independent computation: torchvision's own resize + center crop on the same bytes.
    from torchvision.transforms.v2 import functional as TF

    from contrastkit.pipelines.data.image_folder import resize_square

    images = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(size))
    images = images.to(torch.uint8)
    expected = TF.center_crop(TF.resize(images, [size], antialias=True), [size, size])
    assert torch.equal(resize_square(images, size), expected)
    # Off the uint8 CPU path (float in, rounded): within one grey level of torchvision's.
    as_float = resize_square(images.float(), size)
    assert (as_float - expected.float()).abs().max() <= 1
