"""A decoded cache of a MiniPlaces split: every JPEG decoded once into one uint8 file that all
DataLoader workers, later epochs and later runs memory-map read-only, so they skip decoding.

The file ``<cache_dir>/decoded_<split>.cache`` is a HEADER_BYTES header (MAGIC, then JSON with
the format, the key, the image count and shape) followed by the images as one C-contiguous
(N, H, W, 3) uint8 RGB array: exactly what ``load_image`` returns for each JPEG. MiniPlaces
train is 100,000 x 128 x 128 x 3 bytes = 4.9 GB of disk; it needs no RAM beyond the pages in use.

The key is a SHA-256 of the OpenCV version and, in list order, each image's relative path, byte
size and modification time: a changed list, a changed image or a new decoder rebuilds the file.
A file is built under a temporary name in the same folder, fsynced and renamed, and the
temporary file is removed on any failure, so a cache is either complete or absent.

A split whose images are not all the same size is not cached: the file then holds only a
header saying so (``uniform: false``, recording the first odd image) and
``with_decoded_cache`` returns the split decoded from its JPEGs (``CheckedImages``), printing
one line that says so.

Every image is checked before it is decoded (``load_checked_image``): libjpeg decodes a JPEG cut
short without an error (the missing rows grey, one warning that names no file), so a file that
ends before its end-of-image marker stops the run with one line naming it, both when the cache
is built and when JPEGs are decoded without it. A cache file deleted during a run (``rm -r
data/cache``) stops nothing: processes that have it mapped keep reading it, and a process that
opens it later decodes the JPEGs instead (the same pixels). ``started`` starts a DataLoader's
worker processes with Ctrl-C held, so that an interrupt during their start-up is neither lost
nor kills a half-started worker.
"""
import contextlib
import errno
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import threading
import time

import cv2
import numpy as np
from torch.utils.data import DataLoader, Dataset, get_worker_info

from utils import ImageReadError

MAGIC = b"MINIPLACES DECODED CACHE\n"
HEADER_BYTES = 4096
FORMAT = 2  # 2: every image checked whole before it is decoded (files of format 1 are rebuilt once)
BUILD_BATCH = 64
HINT = "name another folder with --cache-dir DIR or turn the cache off with --no-cache"


class CacheError(Exception):
    """The cache cannot be built or opened (disk short, folder not writable, a file there that
    this module did not write); the message is one line naming the folder or file."""


def cache_path(cache_dir, split):
    """The cache file of ``split`` ("train", "val", "test") in ``cache_dir``."""
    return os.path.join(cache_dir, f"decoded_{split}.cache")


def cache_key(image_files):
    """Hex SHA-256 of the decoder version and each file's path, size and mtime, in order.

    ``image_files`` is a list of (relative path, path on disk).
    Raises:
        ImageReadError: naming an image that is missing.
    """
    h = hashlib.sha256(f"format {FORMAT} opencv {cv2.__version__}\n".encode())
    for rel, path in image_files:
        try:
            st = os.stat(path)
        except OSError as e:
            raise ImageReadError(f"cannot read image {path} ({e.strerror})") from e
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def read_header(path):
    """The header dict of the cache file ``path``, or None when there is no file. A file of
    this module whose header cannot be parsed gives ``{"key": None}`` (stale).

    Raises:
        CacheError: ``path`` exists but was not written by this module.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CacheError(f"cannot read the decoded cache {path} ({e.strerror}); {HINT}") from e
    if not raw.startswith(MAGIC):
        raise CacheError(f"{path} exists but is not a decoded cache written by decoded_cache.py; "
                         f"move it away or {HINT}")
    try:
        header = json.loads(raw[len(MAGIC):].decode())
    except ValueError:
        return {"key": None}
    return header


def _expected_size(header):
    """Bytes of a complete file with this header."""
    if not header.get("uniform"):
        return HEADER_BYTES
    return HEADER_BYTES + header["count"] * int(np.prod(header["shape"]))


def _is_current(path, header, key):
    return (header is not None and header.get("format") == FORMAT and header.get("key") == key
            and os.path.getsize(path) == _expected_size(header))


JPEG_START, JPEG_SCAN, JPEG_END = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"  # SOI, SOS, EOI markers
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"  # signature, IEND chunk + CRC
REPLACE_HINT = ("replace the file (bash download_dataset.sh fetches MiniPlaces again) or remove its line from the "
                "label file")


def image_file_problem(data):
    """What makes the bytes of an image file incomplete, or None when they look whole.

    A JPEG needs an end-of-image marker after the start-of-scan marker of its last scan: the
    entropy-coded data after a scan marker holds neither (each of its 0xFF bytes is followed by
    0x00 or a restart marker), so a file cut anywhere in its image data has no end marker after
    its last scan (libjpeg would decode it without an error, the missing rows grey), while an
    embedded thumbnail's end marker comes before the image's scans. Searched from the end, a
    whole file costs a few microseconds. A PNG needs its closing IEND chunk. Other formats are
    left to the decoder.
    """
    if data[:2] == JPEG_START:
        if JPEG_SCAN not in data:
            return "a JPEG without image data (no start-of-scan marker)"
        end = data.rfind(JPEG_END)
        if end < 0 or data.find(JPEG_SCAN, end) >= 0:
            return "a JPEG cut short (it ends before its end-of-image marker)"
    elif data[:8] == PNG_START and PNG_END not in data[-32:]:
        return "a PNG cut short (no IEND chunk at its end)"
    return None


def load_checked_image(path):
    """``utils.load_image(path)``: the (H, W, 3) uint8 RGB array, decoded from bytes read once
    and checked whole first (``image_file_problem``); the same decoder, so the same pixels.

    Raises:
        ImageReadError: one line naming ``path``: missing, cut short or not an image.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageReadError(f"cannot read image {path} ({e.strerror})") from e
    problem = image_file_problem(data)
    if problem is not None:
        raise ImageReadError(f"image {path} is {problem}: {REPLACE_HINT}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"cannot decode image {path} (not an image, or damaged): {REPLACE_HINT}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class CheckedImages(Dataset):
    """A MiniPlacesLoader's items, ``(transforms(image), label)``, with each JPEG read by
    ``load_checked_image``: how a split is read without its decoded cache (--no-cache, images
    of different sizes, a cache file deleted during the run)."""

    def __init__(self, dataset):
        self.root_folder = dataset.root_folder
        self.file_label_list = dataset.file_label_list
        self.transforms = dataset.transforms

    def __len__(self):
        return len(self.file_label_list)

    def __getitem__(self, index):
        relpath, label = self.file_label_list[index]
        img = load_checked_image(os.path.join(self.root_folder, "images", relpath))
        if self.transforms is not None:
            img = self.transforms(img)
        return img, label


@contextlib.contextmanager
def sigint_held():
    """Hold Ctrl-C (SIGINT) during the block and raise KeyboardInterrupt after it.

    For steps that must not stop halfway: a checkpoint's writing, and the start of DataLoader
    workers, where an interrupt that arrives inside ``os.fork``'s callbacks is printed as
    "Exception ignored" and lost, and one that reaches a half-started worker kills it. Processes
    forked inside the block keep the holding handler: DataLoader workers ignore Ctrl-C and are
    stopped by the main process. Outside the main thread, or where SIGINT is ignored, the block
    runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        yield  # SIGINT ignored (a background job of a script): it stays ignored
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
    if caught:
        raise KeyboardInterrupt


def started(loader):
    """``iter(loader)``, its worker processes started with Ctrl-C held (``sigint_held``)."""
    with sigint_held():
        return iter(loader)


class _DecodeImages(Dataset):
    """Item i: the decoded image i (H, W, 3) uint8, or the ImageReadError message naming it
    (returned, not raised, so that a worker's error reaches the builder as one line)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            return load_checked_image(self.paths[index])
        except ImageReadError as e:
            return str(e)


def _as_list(batch):
    return batch


def _open_new(path):
    """File descriptor of a new file ``path`` (fails if it exists)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


def _write_all(fd, data):
    """Write the bytes-like ``data`` completely to ``fd``."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _temp_name(path):
    """Hidden temporary name next to ``path`` carrying this host and process id."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{socket.gethostname()}.{os.getpid()}.tmp")


def _remove_dead_temps(path):
    """Delete temporary files of ``path`` left by killed builds of this host (dead pids)."""
    folder, name = os.path.split(path)
    prefix = f".{name}.{socket.gethostname()}."
    for entry in os.listdir(folder):
        pid = entry[len(prefix):-len(".tmp")]
        if not (entry.startswith(prefix) and entry.endswith(".tmp") and pid.isdigit()):
            continue
        try:
            if int(pid) != os.getpid():
                os.kill(int(pid), 0)
                continue  # a build running now
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # a live process of another user
        os.remove(os.path.join(folder, entry))
        print(f"=> decoded cache: removed {os.path.join(folder, entry)}, left by a killed build")


def _create_temp(path, nbytes):
    """(fd, temporary path) of a new file for ``path`` once ``nbytes`` are known to fit."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        _remove_dead_temps(path)
        free = shutil.disk_usage(folder).free
        if free < nbytes:
            raise CacheError(f"not enough disk space for the decoded cache in {folder}: it needs "
                             f"{nbytes:,} bytes, {free:,} are free; {HINT}")
        tmp = _temp_name(path)
        return _open_new(tmp), tmp
    except OSError as e:
        raise CacheError(f"cannot write the decoded cache in {folder} ({e.strerror}); {HINT}") from e


def _fsync_folder(path):
    """fsync the folder holding ``path`` so that a rename into it is durable."""
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _header_bytes(header):
    raw = MAGIC + json.dumps(header).encode()
    return raw + b" " * (HEADER_BYTES - len(raw))


def _write_file(path, header, images):
    """Write ``header`` then each (H, W, 3) uint8 array of the iterable ``images`` to
    ``path`` atomically (a temporary file, fsynced and renamed; removed on any failure).
    Returns None, or (index, shape) of the first image whose shape is not
    ``header["shape"]``, in which case nothing is written."""
    fd, tmp = _create_temp(path, _expected_size(header))
    odd = None
    try:
        try:
            _write_all(fd, _header_bytes(header))
            for i, img in enumerate(images):
                if img.shape != tuple(header["shape"]):
                    odd = i, img.shape
                    break
                _write_all(fd, np.ascontiguousarray(img))
            if odd is None:
                os.fsync(fd)
        finally:
            os.close(fd)
        if odd is None:
            os.replace(tmp, path)
            _fsync_folder(path)
    except ImageReadError:
        raise
    except OSError as e:
        kind = "the disk is full" if e.errno == errno.ENOSPC else e.strerror
        raise CacheError(f"cannot write the decoded cache {path} ({kind}; it needs "
                         f"{_expected_size(header):,} bytes); {HINT}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return odd


def build_cache(image_files, path, key, workers=0):
    """Decode every image of ``image_files`` ([(relative path, path on disk)]) with
    ``workers`` DataLoader processes and write the cache file ``path`` (see the module
    docstring). Returns the new file's header.

    Raises:
        ImageReadError: naming the first image that cannot be decoded (nothing is written).
        CacheError: the disk is short or the folder cannot be written (nothing is left behind).
    """
    loader = DataLoader(_DecodeImages([p for _, p in image_files]), batch_size=BUILD_BATCH,
                        num_workers=workers, collate_fn=_as_list)

    def decoded():
        for batch in started(loader):
            for img in batch:
                if isinstance(img, str):
                    raise ImageReadError(img)
                yield img

    images = decoded()
    try:
        first = next(images)
        header = {"format": FORMAT, "key": key, "count": len(image_files), "shape": list(first.shape),
                  "uniform": True}
        odd = _write_file(path, header, itertools.chain([first], images))
    finally:
        images.close()  # stops the decoding workers
    if odd is not None:
        index, shape = odd
        header = {"format": FORMAT, "key": key, "count": len(image_files), "uniform": False,
                  "reason": f"{image_files[0][0]} is {first.shape[0]}x{first.shape[1]}, "
                            f"{image_files[index][0]} is {shape[0]}x{shape[1]}"}
        _write_file(path, header, [])
    return header


def with_decoded_cache(dataset, cache_dir, workers=0, build=True):
    """``dataset`` (a MiniPlacesLoader) read from its decoded cache in ``cache_dir``: a
    DecodedCacheDataset with the same items, its transforms and labels. The cache is built
    first (decoding with ``workers`` processes) when missing or out of date, unless ``build``
    is False (then it must be current: the DDP ranks that wait for rank 0). Returns the split
    decoded from its JPEGs (``CheckedImages``) when its images differ in size. Prints one line
    when it reuses a file or does not cache the split, and two when it builds one (before:
    what and where, after: the size and the seconds it took).

    Raises:
        CacheError: disk short, folder not writable, a foreign file in the way, or (``build``
            False) no current cache.
        ImageReadError: an image is missing, cut short or cannot be decoded (named).
    """
    image_files = [(rel, os.path.join(dataset.root_folder, "images", rel)) for rel, _ in dataset.file_label_list]
    key = cache_key(image_files)
    path = cache_path(cache_dir, dataset.split)
    header = read_header(path)
    if _is_current(path, header, key):
        if header["uniform"]:
            print(f"=> decoded cache: reusing {path} ({header['count']} images of "
                  f"{header['shape'][0]}x{header['shape'][1]})", flush=True)
    elif not build:
        raise CacheError(f"the decoded cache {path} is missing or out of date after rank 0 built it; "
                         "all processes must see the same --cache-dir")
    else:
        if header is not None:
            print(f"=> decoded cache: {path} is out of date (the image list, an image or the format changed); "
                  "rebuilding it", flush=True)
            try:
                os.remove(path)
            except OSError as e:
                raise CacheError(f"cannot replace the out-of-date decoded cache {path} ({e.strerror}); "
                                 f"{HINT}") from e
        print(f"=> decoded cache: decoding the {len(image_files)} {dataset.split} images once into {path}",
              flush=True)
        start = time.time()
        header = build_cache(image_files, path, key, workers)
        if header["uniform"]:
            print(f"=> decoded cache: wrote {path} ({os.path.getsize(path) / 2 ** 20:,.1f} MiB) "
                  f"in {time.time() - start:.1f} s", flush=True)
    if not header["uniform"]:
        print(f"=> decoded cache: not caching {dataset.split}, its images differ in size "
              f"({header['reason']}); decoding the JPEGs every epoch instead (noted in {path})", flush=True)
        return CheckedImages(dataset)
    return DecodedCacheDataset(path, [label for _, label in dataset.file_label_list], dataset.transforms,
                               source=CheckedImages(dataset))


class DecodedCacheDataset(Dataset):
    """A split read from its cache file: item i is ``(transforms(image), label)`` where image
    is the (H, W, 3) uint8 RGB array ``load_image`` gives for JPEG i: a read-only view of the
    file's memory map, which the transforms read without a copy of their own (one that writes
    into its input raises ValueError: copy first), or a writable copy without transforms. Each
    process maps the file on first use (the map is not pickled), so DataLoader workers share the
    operating system's page cache instead of copies. A process that finds the file gone (deleted
    during the run) or replaced by another cache reads the items from ``source`` instead, and
    the first such process says so in one line.

    Args:
        path: a complete cache file (see ``with_decoded_cache``).
        labels: N ints, the labels of the images in order.
        transforms: callable applied to each image, or None.
        source: the same items decoded from the JPEGs (``CheckedImages``), or None.
    """

    def __init__(self, path, labels, transforms=None, source=None):
        header = read_header(path)
        if header is None or not header.get("uniform") or header["count"] != len(labels) \
                or os.path.getsize(path) != _expected_size(header):
            raise CacheError(f"{path} is not a complete decoded cache of {len(labels)} images")
        self.path = path
        self.labels = labels
        self.transforms = transforms
        self.source = source
        self.key = header["key"]
        self.shape = (header["count"], *header["shape"])  # (N, H, W, 3)
        self._images = None
        self._gone = False

    def __len__(self):
        return len(self.labels)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_images"] = None
        return state

    @property
    def images(self):
        """The (N, H, W, 3) uint8 read-only memory map of this process (a plain ndarray view of
        it: indexing an np.memmap costs more than copying an image out), or None when the file
        is gone and ``source`` decodes instead."""
        if self._images is None and not self._gone:
            self._images = self._open()
            self._gone = self._images is None
        return self._images

    def _open(self):
        """The map of the cache file while it is the one this dataset was made for; else None
        when there is a ``source`` to decode from (the first worker says so), or the error."""
        try:
            header = read_header(self.path)
            if header is None or header.get("key") != self.key or os.path.getsize(self.path) != _expected_size(header):
                raise FileNotFoundError(errno.ENOENT, "gone or replaced", self.path)
            return np.asarray(np.memmap(self.path, dtype=np.uint8, mode="r", offset=HEADER_BYTES, shape=self.shape))
        except (OSError, CacheError):
            if self.source is None:
                raise
        worker = get_worker_info()
        if worker is None or worker.id == 0:
            print(f"=> decoded cache: {self.path} is gone (deleted during the run?): decoding the JPEGs instead "
                  "(the same pixels; the next run builds the cache again)", flush=True)
        return None

    def __getitem__(self, index):
        images = self.images
        if images is None:
            return self.source[index]
        img = images[index]  # (H, W, 3) uint8, a read-only view of the map
        img = img.copy() if self.transforms is None else self.transforms(img)
        return img, self.labels[index]
