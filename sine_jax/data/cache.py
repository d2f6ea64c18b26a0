"""An on-disk cache of preprocessed arrays, keyed by what they were computed from.

An entry is `<name>-<key>.npz` (arrays; loaded with `allow_pickle=False`) plus
`<name>-<key>.json` (everything else), where the key hashes the key material: the
preprocessing config and a fingerprint of each source file (size, mtime, and a SHA-256 of its
first and last MiB and of 16 blocks spread over it). Both files are written to temporary
names and renamed into place, the JSON last; the JSON names a random build id that the npz
must carry, so a half-written or mismatched pair is never used. Builders hold an exclusive
`flock` on `<name>-<key>.lock`, so concurrent jobs build an entry once: the others wait and
then read it. Any damage (unreadable, stale, inconsistent) means: rebuild.
"""

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import tempfile
import uuid

import numpy as np
from absl import logging

_HEAD_TAIL_BYTES = 1 << 20
_SAMPLE_BLOCKS = 16
_SAMPLE_BYTES = 1 << 16
_BUILD_ID = "_build_id"


def fingerprint(path: str) -> dict:
    """Size, mtime and a SHA-256 of the first and last MiB and of blocks spread over `path`."""
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_HEAD_TAIL_BYTES))
        if stat.st_size > 2 * _HEAD_TAIL_BYTES:
            for offset in np.linspace(_HEAD_TAIL_BYTES, stat.st_size - _HEAD_TAIL_BYTES,
                                      _SAMPLE_BLOCKS, dtype=np.int64):
                f.seek(int(offset))
                digest.update(f.read(_SAMPLE_BYTES))
        if stat.st_size > _HEAD_TAIL_BYTES:
            f.seek(max(stat.st_size - _HEAD_TAIL_BYTES, _HEAD_TAIL_BYTES))
            digest.update(f.read())
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def entry_key(key_material: dict) -> str:
    """A short hash of JSON-serialisable key material."""
    return hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:24]


class Cache:
    """The entry `<cache_dir>/<name>-<key>.{npz,json}` for `key_material`."""

    def __init__(self, cache_dir: str, name: str, key_material: dict):
        self.key_material = json.loads(json.dumps(key_material, sort_keys=True, default=str))
        self.prefix = f"{name}-{entry_key(self.key_material)}"
        self.dir = cache_dir
        base = os.path.join(cache_dir, self.prefix)
        self.npz_path, self.json_path = base + ".npz", base + ".json"
        self.lock_path = base + ".lock"

    def load(self) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, sidecar) of a complete entry for this key; None if absent or damaged."""
        if not os.path.exists(self.json_path):
            return None
        try:
            with open(self.json_path, encoding="utf-8") as f:
                sidecar = json.load(f)
            if sidecar["key_material"] != self.key_material:
                logging.warning("Cache %s is stale; rebuilding", self.json_path)
                return None
            with np.load(self.npz_path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            if str(arrays.pop(_BUILD_ID)) != sidecar["build_id"]:
                raise ValueError("the npz and json files are from different builds")
            return arrays, sidecar["data"]
        except Exception as e:  # noqa: BLE001  (any damage means: rebuild)
            logging.warning("Cache %s is unreadable (%s: %s); rebuilding", self.npz_path,
                            type(e).__name__, e)
            return None

    def save(self, arrays: dict[str, np.ndarray], data: dict) -> None:
        """Writes the entry atomically; a failure (e.g. a full disk) only logs a warning."""
        build_id = uuid.uuid4().hex
        try:
            os.makedirs(self.dir, exist_ok=True)
            self._atomic_write(self.npz_path, lambda f: np.savez(
                f, **arrays, **{_BUILD_ID: np.array(build_id)}))
            sidecar = {"key_material": self.key_material, "build_id": build_id, "data": data}
            self._atomic_write(self.json_path,
                               lambda f: f.write(json.dumps(sidecar).encode("utf-8")))
            logging.info("Cached in %s", self.npz_path)
        except OSError as e:
            logging.warning("Could not write the cache %s: %s", self.npz_path, e)

    @contextlib.contextmanager
    def building(self):
        """Holds the entry's build lock; yields (scratch directory, whether `save` may write).

        Leftovers of killed builders of this entry are removed first. When the cache
        directory is not writable, yields a system temporary directory and False.
        """
        try:
            os.makedirs(self.dir, exist_ok=True)
            lock = open(self.lock_path, "a")  # noqa: SIM115  (closed by the with below)
        except OSError as e:
            logging.warning("Cannot use the cache %s (%s); building without it", self.dir, e)
            with tempfile.TemporaryDirectory(prefix="sine-jax-") as scratch:
                yield scratch, False
            return
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
            except OSError as e:  # e.g. a file system without locks: renames stay atomic
                logging.warning("Cannot lock %s (%s); building without the lock",
                                self.lock_path, e)
            try:
                for leftover in glob.glob(os.path.join(self.dir, f".tmp-{self.prefix}-*")):
                    if os.path.isdir(leftover):
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(leftover)
                scratch = tempfile.mkdtemp(dir=self.dir, prefix=f".tmp-{self.prefix}-")
                try:
                    yield scratch, True
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _atomic_write(self, path: str, write) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".tmp-{self.prefix}-")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
