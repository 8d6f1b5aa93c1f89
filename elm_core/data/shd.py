"""Spiking Heidelberg Digits: locate, download, verify, decompress and bin the HDF5 files."""

import gzip
import shutil
import zlib
from pathlib import Path

import h5py
import numpy as np

from elm_core.data.errors import DatasetCorrupt, DatasetUnavailable
from elm_core.data.files import download, fetch_text, md5_of_file
from elm_core.data.spikes import SpikeDigits

SHD_URL = "https://zenkelab.org/datasets/"
SHD_CHECKSUMS = "md5sums.txt"  # published next to the files as "<md5>  <file name>" lines
SHD_CHANNELS = 700
SHD_CLASSES = 20
SHD_DATASETS = ("spikes/times", "spikes/units", "labels")


def shd_file(directory: Path, split: str, url: str = SHD_URL, allow_download: bool = True) -> Path:
    """Path of the uncompressed shd_<split>.h5, downloading and gunzipping shd_<split>.h5.gz as needed."""
    plain = directory / f"shd_{split}.h5"
    if plain.exists():
        return plain
    packed = directory / f"shd_{split}.h5.gz"
    if not packed.exists():
        if not allow_download:
            raise DatasetUnavailable(f"{packed.name} not found in {directory}; put shd_{split}.h5(.gz) there "
                                     "or allow download")
        _download_packed(packed, url)
    _check_published_md5(packed)
    _gunzip(packed, plain)
    return plain


def _download_packed(packed: Path, url: str) -> None:
    where = f"put {packed.name} (from {url}) in {packed.parent}"
    try:
        listing = fetch_text(url + SHD_CHECKSUMS)
        packed.parent.mkdir(parents=True, exist_ok=True)
        (packed.parent / SHD_CHECKSUMS).write_text(listing)
        expected = _published_md5s(listing).get(packed.name)
        if expected is None:
            raise DatasetCorrupt(f"{url}{SHD_CHECKSUMS} lists no md5 for {packed.name}")
        download(url + packed.name, packed, expected)
    except DatasetUnavailable as error:
        raise DatasetUnavailable(f"{packed.name} not found in {packed.parent} and {error}; {where}") from error


def _published_md5s(listing: str) -> dict[str, str]:
    sums = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[Path(parts[1].lstrip("*")).name] = parts[0].lower()
    return sums


def _check_published_md5(packed: Path) -> None:
    """Verify against md5sums.txt when one lies next to the file (it does after a download)."""
    listing = packed.parent / SHD_CHECKSUMS
    if not listing.exists():
        return
    expected = _published_md5s(listing.read_text()).get(packed.name)
    if expected is not None and (actual := md5_of_file(packed)) != expected:
        raise DatasetCorrupt(f"{packed} has md5 {actual}, expected {expected} from {listing}; delete it and retry")


def _gunzip(packed: Path, plain: Path) -> None:
    partial = plain.with_name(plain.name + ".part")
    try:
        with gzip.open(packed, "rb") as source, partial.open("wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        partial.unlink(missing_ok=True)
        raise DatasetCorrupt(f"{packed} is not a valid gzip file ({error}); delete it and retry") from error
    partial.replace(plain)


def read_shd(path: Path, bin_s: float, duration_s: float) -> SpikeDigits:
    """Bin one SHD file into SpikeDigits with round(duration_s / bin_s) steps of bin_s seconds."""
    try:
        with h5py.File(path, "r") as handle:
            missing = [name for name in SHD_DATASETS if name not in handle]
            if missing:
                raise DatasetCorrupt(f"{path} lacks dataset(s) {', '.join(missing)}; "
                                     f"an SHD file has {', '.join(SHD_DATASETS)}")
            times, units, labels = (handle[name][()] for name in SHD_DATASETS)
    except OSError as error:
        raise DatasetCorrupt(f"{path} is not a readable HDF5 file ({error})") from error
    except TypeError as error:
        raise DatasetCorrupt(f"{path}: {', '.join(SHD_DATASETS)} must be datasets of per-sample arrays "
                             f"({error})") from error
    if not (len(times) == len(units) == len(labels)):
        raise DatasetCorrupt(f"{path}: spikes/times, spikes/units and labels have "
                             f"{len(times)}, {len(units)}, {len(labels)} rows")
    spike_counts = np.array([len(row) for row in times], dtype=np.int64)
    if not np.array_equal(spike_counts, [len(row) for row in units]):
        raise DatasetCorrupt(f"{path}: spikes/times and spikes/units differ in length for some sample")
    all_times = np.concatenate([np.empty(0, np.float32), *times]).astype(np.float32)
    all_units = np.concatenate([np.empty(0, np.int32), *units]).astype(np.int32)
    if len(all_units) and (all_units.min() < 0 or all_units.max() >= SHD_CHANNELS):
        raise DatasetCorrupt(f"{path}: spikes/units outside 0..{SHD_CHANNELS - 1}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= SHD_CLASSES):
        raise DatasetCorrupt(f"{path}: labels outside 0..{SHD_CLASSES - 1}")
    n_steps = round(duration_s / bin_s)
    sample_of_spike = np.repeat(np.arange(len(labels), dtype=np.int32), spike_counts)
    step = np.floor(all_times.astype(np.float64) / bin_s).astype(np.int32)  # float32 puts t = 1.0 s in bin 499
    return SpikeDigits.from_spikes(sample_of_spike, step, all_units, labels, n_steps, SHD_CHANNELS)

