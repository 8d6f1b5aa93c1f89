"""Byte corpora for language modelling: enwik8, local text, the Python stdlib, a synthetic copy task."""

import hashlib
import sysconfig
import zipfile
import zlib
from pathlib import Path

import numpy as np

from elm_core.data.errors import DatasetCorrupt, DatasetError, DatasetUnavailable
from elm_core.data.files import data_dir, download

ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_BYTES = 100_000_000
# md5 of the unzipped 100,000,000-byte file as published in Matt Mahoney's enwik8/enwik9 listing;
# a zip member's CRC-32 is checked on every read as well.
ENWIK8_MD5 = "a1fa5ffddb56f4953e226637dabbb36a"
ENWIK8_MEMBER = "enwik8"
ENWIK8_VOCABULARY = 205  # distinct byte values of the whole (md5-checked) file: its vocabulary and output classes

MIN_CORPUS_BYTES = 1000
SPLIT_BLOCKS = 100
HELD_OUT_FRACTION = 0.05  # of the blocks each, for valid and for test
PYSTDLIB_MAX_BYTES = 4_000_000


def enwik8_splits(options: dict) -> dict[str, np.ndarray]:
    """The standard split: first 90 % train, next 5 % valid, last 5 % (90 M / 5 M / 5 M bytes).

    options['expected_size'] (and optionally 'expected_md5') let a smaller file in the
    same format go through this same path; the md5 is only known for the real file.
    """
    directory = data_dir(options)
    expected_size = int(options.get("expected_size", ENWIK8_BYTES))
    expected_md5 = options.get("expected_md5", ENWIK8_MD5 if expected_size == ENWIK8_BYTES else None)
    raw, archive = directory / ENWIK8_MEMBER, directory / "enwik8.zip"
    if not raw.exists() and not archive.exists():
        where = (f"put enwik8.zip or the raw {expected_size:,}-byte enwik8 file in {directory} "
                 "(or set ELMSCALE_DATA_DIR)")
        if not options.get("download", True):
            raise DatasetUnavailable(f"enwik8 not found in {directory}; {where}")
        url = options.get("url", ENWIK8_URL)
        try:
            download(url, archive)
        except DatasetUnavailable as error:
            raise DatasetUnavailable(f"enwik8 not found in {directory} and {error}; {where}") from error
    data = _read_raw(raw, expected_size) if raw.exists() else _read_zip(archive, expected_size)
    if expected_md5 is not None and (actual := hashlib.md5(data).hexdigest()) != expected_md5:
        source = raw if raw.exists() else archive
        raise DatasetCorrupt(f"{source} holds enwik8 with md5 {actual}, expected {expected_md5}; delete it and retry")
    ids = np.frombuffer(data, dtype=np.uint8)
    train_end, valid_end = expected_size * 90 // 100, expected_size * 95 // 100
    return {"train": ids[:train_end], "valid": ids[train_end:valid_end], "test": ids[valid_end:]}


def _read_raw(path: Path, expected_size: int) -> bytes:
    size = path.stat().st_size
    if size != expected_size:
        raise DatasetCorrupt(f"{path} has {size:,} bytes, expected {expected_size:,} (truncated or not enwik8)")
    return path.read_bytes()


def _read_zip(path: Path, expected_size: int) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            if ENWIK8_MEMBER not in archive.namelist():
                raise DatasetCorrupt(f"{path} has no member '{ENWIK8_MEMBER}' "
                                     f"(members: {', '.join(archive.namelist()) or 'none'})")
            size = archive.getinfo(ENWIK8_MEMBER).file_size
            if size != expected_size:
                raise DatasetCorrupt(f"{path}: member '{ENWIK8_MEMBER}' has {size:,} bytes, expected {expected_size:,}")
            return archive.read(ENWIK8_MEMBER)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise DatasetCorrupt(f"{path} is a damaged zip file ({error}); delete it and retry") from error


def textfile_splits(options: dict, seed: int) -> dict[str, np.ndarray]:
    """Every file under options['path'] (or that one file), in sorted path order, split by seeded blocks."""
    if "path" not in options:
        raise DatasetError("task 'textfile' needs option 'path' (a text file or a directory of them)")
    root = Path(options["path"]).expanduser()
    if not root.exists():
        raise DatasetUnavailable(f"textfile path {root} does not exist")
    files = sorted(path for path in root.rglob("*") if path.is_file()) if root.is_dir() else [root]
    corpus = b"".join(path.read_bytes() for path in files)
    return block_splits(np.frombuffer(corpus, dtype=np.uint8), seed, str(root))


def pystdlib_splits(options: dict, seed: int) -> dict[str, np.ndarray]:
    """The running Python's stdlib .py files in sorted path order, cut at options['max_bytes'] (default 4 MB)."""
    max_bytes = int(options.get("max_bytes", PYSTDLIB_MAX_BYTES))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pieces, total = [], 0
    for path in _sorted_py_files(stdlib):
        if total >= max_bytes:
            break
        text = path.read_bytes()[: max_bytes - total]
        pieces.append(text)
        total += len(text)
    return block_splits(np.frombuffer(b"".join(pieces), dtype=np.uint8), seed, f"stdlib {stdlib}")


def _sorted_py_files(directory: Path):
    """Depth-first in sorted order, lazily, so a size cap stops the walk early; installed packages are skipped."""
    entries = sorted(directory.iterdir())
    for entry in entries:
        if entry.is_file() and entry.suffix == ".py":
            yield entry
    for entry in entries:
        if entry.is_dir() and entry.name not in ("site-packages", "dist-packages", "__pycache__"):
            yield from _sorted_py_files(entry)


def synthetic_copy_splits(options: dict, seed: int) -> dict[str, np.ndarray]:
    """Lines 'word:word' with a random word over 'abcdefgh': the copy after ':' is predictable from memory."""
    rng = np.random.default_rng(int(options.get("corpus_seed", 0)))
    target_bytes = int(options.get("corpus_bytes", 200_000))
    letters = np.frombuffer(b"abcdefgh", dtype=np.uint8)
    lines = []
    total = 0
    while total < target_bytes:
        word = letters[rng.integers(0, len(letters), rng.integers(3, 9))].tobytes()
        lines.append(word + b":" + word + b"\n")
        total += 2 * len(word) + 2
    return block_splits(np.frombuffer(b"".join(lines), dtype=np.uint8), seed, "synthetic_copy corpus")


def block_splits(corpus: np.ndarray, seed: int, source: str) -> dict[str, np.ndarray]:
    """Cut the corpus into 100 contiguous blocks; a seeded 5 % of them is valid, another 5 % test, the rest train.

    Each split keeps its blocks in corpus order, so text inside a block stays contiguous.
    """
    if len(corpus) < MIN_CORPUS_BYTES:
        raise DatasetError(f"{source} has {len(corpus)} bytes; at least {MIN_CORPUS_BYTES} are needed")
    bounds = np.linspace(0, len(corpus), SPLIT_BLOCKS + 1).astype(np.int64)
    n_held_out = max(1, round(HELD_OUT_FRACTION * SPLIT_BLOCKS))
    order = np.random.default_rng(seed).permutation(SPLIT_BLOCKS)
    chosen = {
        "train": np.sort(order[2 * n_held_out :]),
        "valid": np.sort(order[:n_held_out]),
        "test": np.sort(order[n_held_out : 2 * n_held_out]),
    }
    return {
        split: np.concatenate([corpus[bounds[block] : bounds[block + 1]] for block in blocks])
        for split, blocks in chosen.items()
    }
