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
``with_decoded_cache`` returns the JPEG dataset itself, printing one line that says so.
"""
import errno
import hashlib
import itertools
import json
import os
import shutil
import socket
import time

import cv2
import numpy as np
from torch.utils.data import DataLoader, Dataset

from utils import ImageReadError, load_image

MAGIC = b"MINIPLACES DECODED CACHE\n"
HEADER_BYTES = 4096
FORMAT = 1
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


class _DecodeImages(Dataset):
    """Item i: the decoded image i (H, W, 3) uint8, or the ImageReadError message naming it
    (returned, not raised, so that a worker's error reaches the builder as one line)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            return load_image(self.paths[index])
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
        for batch in loader:
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
    is False (then it must be current: the DDP ranks that wait for rank 0). Returns
    ``dataset`` itself when the split's images differ in size. Prints one line saying which.

    Raises:
        CacheError: disk short, folder not writable, a foreign file in the way, or (``build``
            False) no current cache.
        ImageReadError: an image is missing or cannot be decoded (named).
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
            print(f"=> decoded cache: {path} is out of date (the image list or an image changed); "
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
        return dataset
    return DecodedCacheDataset(path, [label for _, label in dataset.file_label_list], dataset.transforms)


class DecodedCacheDataset(Dataset):
    """A split read from its cache file: item i is ``(transforms(image), label)`` where image
    is the (H, W, 3) uint8 RGB array ``load_image`` gives for JPEG i: a read-only view of the
    file's memory map, which the transforms read without a copy of their own (one that writes
    into its input raises ValueError: copy first), or a writable copy without transforms. Each
    process maps the file on first use (the map is not pickled), so DataLoader workers share the
    operating system's page cache instead of copies.

    Args:
        path: a complete cache file (see ``with_decoded_cache``).
        labels: N ints, the labels of the images in order.
        transforms: callable applied to each image, or None.
    """

    def __init__(self, path, labels, transforms=None):
        header = read_header(path)
        if header is None or not header.get("uniform") or header["count"] != len(labels) \
                or os.path.getsize(path) != _expected_size(header):
            raise CacheError(f"{path} is not a complete decoded cache of {len(labels)} images")
        self.path = path
        self.labels = labels
        self.transforms = transforms
        self.shape = (header["count"], *header["shape"])  # (N, H, W, 3)
        self._images = None

    def __len__(self):
        return len(self.labels)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_images"] = None
        return state

    @property
    def images(self):
        """The (N, H, W, 3) uint8 read-only memory map of this process (a plain ndarray view of
        it: indexing an np.memmap costs more than copying an image out)."""
        if self._images is None:
            self._images = np.asarray(np.memmap(self.path, dtype=np.uint8, mode="r", offset=HEADER_BYTES,
                                                shape=self.shape))
        return self._images

    def __getitem__(self, index):
        img = self.images[index]  # (H, W, 3) uint8, a read-only view of the map
        img = img.copy() if self.transforms is None else self.transforms(img)
        return img, self.labels[index]
