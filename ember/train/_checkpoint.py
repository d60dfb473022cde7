"""``Checkpoint``: a folder of files, local or in storage, possibly one shard per rank."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from ember.errors import CorruptCheckpointError
from ember.train._manifest import MANIFEST_NAME, Manifest, read_manifest
from ember.train._run_folder import checkpoint_index, rank_dir_name
from ember.train._storage import CHUNK, FileEntry, Storage

# Ray 2.5's names: a dict checkpoint's file, the preprocessor's file (and key of a dict
# checkpoint), the key under which a folder checkpoint's ``to_dict`` packs its files, and the
# suffix of the files that hold that dict's other keys.
DICT_CHECKPOINT_FILE = "dict_checkpoint.pkl"
PREPROCESSOR_KEY = "_preprocessor"
FS_CHECKPOINT_KEY = "fs_checkpoint"
METADATA_SUFFIX = ".meta.pkl"

C = TypeVar("C", bound="Checkpoint")


class Checkpoint:
    """A checkpoint: a local folder, or a committed checkpoint in storage.

    In the training loop, make one from a folder you wrote and pass it to ``report``::

        with tempfile.TemporaryDirectory() as d:
            torch.save(model.state_dict(), os.path.join(d, "model.pt"))
            ember.train.report({"loss": loss}, checkpoint=Checkpoint.from_directory(d))

    A checkpoint in storage holds one folder per rank (``rank_0/``, ``rank_1/``...). The one that
    ``get_checkpoint()`` returns in rank r is bound to that rank: ``as_directory()`` fetches rank
    r's files only (rank 0's when only rank 0 saved one). ``for_rank(k)`` and ``all_ranks()``
    reach the others; ``result.checkpoint`` is bound to all ranks. When only rank 0 saved
    files, the all-ranks view is rank 0's folder (its files at the top, as in Ray, where
    ``result.checkpoint.as_directory()`` holds the ``model.pt`` that rank 0 wrote).

    The files of a committed checkpoint are checked against the sizes and sha256 sums in its
    manifest as ``as_directory``/``to_directory`` fetch them; a mismatch raises
    ``CorruptCheckpointError`` naming the file. ``verify_checksums=False`` skips the sums (for
    huge checkpoints; ``CheckpointConfig(verify_checksums=False)`` sets it for a run).

    Ray 2.5's dict checkpoints work too: ``Checkpoint.from_dict({"epoch": 3, "model":
    state_dict})`` is reported like any other (its dict is written, cloudpickled, as the file
    ``dict_checkpoint.pkl`` of the checkpoint's folder, and uploaded) and ``to_dict()`` reads it
    back, from ``get_checkpoint()`` after a restart or from ``result.checkpoint``. ``to_dict``
    unpickles: only read checkpoints you trust (as with ``torch.load``).
    """

    def __init__(self, path: str, *, rank: int | None = None,
                 verify_checksums: bool = True) -> None:
        self.path = path
        self.rank = rank
        self.verify_checksums = verify_checksums
        self._data: dict[str, Any] | None = None  # a dict checkpoint's (from_dict)
        self._storage: Storage | None = None
        self._manifest: Manifest | None = None
        self._manifest_read = False

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """A checkpoint of the files in a local folder (which must exist)."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint folder {path!r} does not exist; write the "
                                    "checkpoint's files into a folder, then pass that folder")
        return cls(os.path.abspath(path))

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """A checkpoint of a dict (Ray 2.5's ``Checkpoint.from_dict``), held in memory until it
        is reported or written: ``as_directory()`` and ``to_directory()`` show it as a folder
        with the file ``dict_checkpoint.pkl`` (the dict, cloudpickled), and ``to_dict()`` gives
        it back.

        >>> Checkpoint.from_dict({"epoch": 3}).to_dict()
        {'epoch': 3}
        """
        if not isinstance(data, dict):
            raise TypeError(f"Checkpoint.from_dict() takes a dict, got {type(data).__name__}")
        checkpoint = cls("")
        checkpoint._data = data
        return checkpoint

    @classmethod
    def from_checkpoint(cls: type[C], other: Checkpoint) -> C:
        """The same checkpoint as an instance of this class (Ray 2.5):
        ``TorchCheckpoint.from_checkpoint(result.checkpoint).get_model(model)``."""
        checkpoint = cls(other.path, rank=other.rank, verify_checksums=other.verify_checksums)
        checkpoint._data = other._data
        return checkpoint

    def __repr__(self) -> str:
        if self._data is not None:
            return f"{type(self).__name__}(data_dict with keys {sorted(map(str, self._data))})"
        rank = "" if self.rank is None else f", rank={self.rank}"
        return f"{type(self).__name__}({self.path!r}{rank})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return False
        if self._data is not None or other._data is not None:
            return self._data is other._data
        return other.path == self.path and other.rank == self.rank

    def __hash__(self) -> int:
        if self._data is not None:
            return id(self._data)
        return hash((self.path, self.rank))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path,), {"rank": self.rank,
                                           "verify_checksums": self.verify_checksums,
                                           "data": self._data})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.rank = state["rank"]
        self.verify_checksums = state.get("verify_checksums", True)
        self._data = state.get("data")

    @property
    def storage(self) -> Storage:
        """Where the checkpoint lives (its path on its fsspec filesystem)."""
        if self._data is not None:
            raise ValueError("a checkpoint made with Checkpoint.from_dict() is in memory and "
                             "has no storage; report it, or write it with to_directory()")
        if self._storage is None:
            self._storage = Storage(self.path)
        return self._storage

    @property
    def filesystem(self) -> Any:
        """The fsspec filesystem that holds this checkpoint."""
        return self.storage.fs

    @property
    def manifest(self) -> Manifest | None:
        """The manifest of a committed checkpoint; ``None`` for a plain folder."""
        if self._data is not None:
            return None
        if not self._manifest_read:
            self._manifest = read_manifest(self.storage)
            self._manifest_read = True
        return self._manifest

    @property
    def index(self) -> int | None:
        """The number in a committed checkpoint's folder name (``checkpoint_000003``: 3); ``None``
        for any other folder.

        >>> Checkpoint("s3://bucket/run/checkpoint_000003").index
        3
        """
        return checkpoint_index(posixpath.basename(self.path.rstrip("/")))

    @property
    def metrics(self) -> dict[str, Any]:
        """Rank 0's metrics reported with this checkpoint (committed checkpoints only)."""
        return dict(self.manifest.metrics) if self.manifest else {}

    @property
    def ranks(self) -> list[int]:
        """The ranks that saved files into this checkpoint."""
        return self.manifest.ranks if self.manifest else []

    def for_rank(self, rank: int) -> Checkpoint:
        """The same checkpoint bound to rank ``rank``: ``as_directory()`` fetches that rank's files.

        >>> Checkpoint("/runs/gpt/checkpoint_000002").for_rank(1)
        Checkpoint('/runs/gpt/checkpoint_000002', rank=1)
        """
        if self._data is not None:  # a dict checkpoint is every rank's
            return self
        return type(self)(self.path, rank=rank, verify_checksums=self.verify_checksums)

    def all_ranks(self) -> Checkpoint:
        """The same checkpoint bound to every rank: ``as_directory()`` fetches every rank's."""
        if self._data is not None:
            return self
        return type(self)(self.path, verify_checksums=self.verify_checksums)

    def check_exists(self) -> None:
        """Raise ``FileNotFoundError`` unless this is a folder or a committed checkpoint."""
        if self._data is not None or self.manifest is not None:
            return
        if not self.storage.exists():
            raise FileNotFoundError(f"checkpoint folder {self.path!r} does not exist")
        if self.index is not None and any(n.startswith("rank_") for n in self.storage.listdir()):
            raise FileNotFoundError(
                f"checkpoint {self.path!r} was never committed (it has no manifest: an upload "
                "did not finish); use an earlier checkpoint")

    def _source_folder(self) -> tuple[str, list[str] | None, dict[str, FileEntry]]:
        """(folder relative to ``path``, files in it or ``None`` for all, the manifest's entry
        of each file relative to that folder) that this view shows."""
        manifest = self.manifest
        if manifest is None:
            return "", None, {}
        if self.rank is None and manifest.ranks != [0]:
            return "", None, {f"{rank_dir_name(rank)}/{entry.path}": entry
                              for rank, entries in manifest.files.items() for entry in entries}
        # Only rank 0 saved: every rank restores from its files, and the all-ranks view is
        # rank 0's folder itself, as Ray shows a checkpoint (one folder of every rank's files).
        rank = 0 if self.rank is None else self.rank
        if rank not in manifest.files and manifest.ranks == [0]:
            rank = 0
        files = manifest.files.get(rank, [])
        return rank_dir_name(rank), [f.path for f in files], {f.path: f for f in files}

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """A local folder with this checkpoint's files (this rank's only, for a rank's view).

        Local checkpoints are shown in place (do not modify them); remote ones are downloaded
        to a temporary folder, deleted on exit.
        """
        if self._data is not None:
            with tempfile.TemporaryDirectory(prefix="ember-ckpt-") as tmp:
                _write_dict(self._data, tmp)
                yield tmp
            return
        self.check_exists()
        folder, files, expected = self._source_folder()
        if self.storage.is_local:
            local = os.path.join(self.storage.root, folder) if folder else self.storage.root
            if files is not None and not files:
                with tempfile.TemporaryDirectory(prefix="ember-ckpt-") as empty:
                    yield empty
                return
            self._verify(local, folder, expected)
            yield local
            return
        with tempfile.TemporaryDirectory(prefix="ember-ckpt-") as tmp:
            self._download(tmp, folder, files)
            self._verify(tmp, folder, expected)
            yield tmp

    def to_directory(self, path: str | None = None) -> str:
        """Copy this checkpoint's files (this rank's only, for a rank's view) into ``path``."""
        self.check_exists()
        target = path or tempfile.mkdtemp(prefix="ember-ckpt-")
        os.makedirs(target, exist_ok=True)
        if self._data is not None:
            _write_dict(self._data, target)
            return target
        folder, files, expected = self._source_folder()
        self._download(target, folder, files)
        self._verify(target, folder, expected)
        return target

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's data as a dict (Ray 2.5's ``to_dict``).

        - A dict checkpoint (``from_dict``, also once reported and restored): its dict, with
          the trainer's preprocessor under ``"_preprocessor"`` when it saved one.
        - A folder checkpoint: ``{"fs_checkpoint": <the folder as tar bytes>}``, as Ray 2.5
          gave; ``Checkpoint.from_dict(that).to_directory()`` writes the folder back.

        ``result.checkpoint`` of a run in which every rank saved reads rank 0's dict.
        """
        if self._data is not None:
            return self._data
        view = self._first_rank_view()
        with view.as_directory() as local:
            data = _read_dict(local)
            if data is not None:
                return data
        with self.as_directory() as local:
            return _pack_folder(local)

    def get_preprocessor(self) -> Any:
        """The preprocessor saved with this checkpoint (the trainer's ``preprocessor=``, or
        ``TorchCheckpoint.from_model(..., preprocessor=...)``), or ``None``."""
        if self._data is not None:
            return self._data.get(PREPROCESSOR_KEY)
        with self._first_rank_view().as_directory() as local:
            data = _read_dict(local)
            if data is not None:
                return data.get(PREPROCESSOR_KEY)
            return _read_pickle(os.path.join(local, PREPROCESSOR_KEY))

    def _first_rank_view(self) -> Checkpoint:
        """This view, or rank 0's when this is the all-ranks view of a checkpoint that more
        ranks saved (Ray 2.5 kept rank 0's checkpoint only)."""
        manifest = self.manifest
        if self.rank is not None or manifest is None or manifest.ranks in ([], [0]):
            return self
        return self.for_rank(0 if 0 in manifest.ranks else manifest.ranks[0])

    def _download(self, target: str, folder: str, files: list[str] | None) -> None:
        if self.storage.is_local:
            source = os.path.join(self.storage.root, folder) if folder else self.storage.root
            names = files if files is not None else None
            if names is None:
                shutil.copytree(source, target, dirs_exist_ok=True)
                return
            for rel in names:
                dest = os.path.join(target, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                try:
                    shutil.copy2(os.path.join(source, rel), dest)
                except FileNotFoundError:
                    raise self._missing(folder, rel) from None
            return
        parts = (folder,) if folder else ()
        try:
            self.storage.download_directory(target, *parts, files=files)
        except FileNotFoundError as exc:
            if files is None:
                raise
            missing = next((rel for rel in files
                            if not os.path.exists(os.path.join(target, *rel.split("/")))), "?")
            raise self._missing(folder, missing) from exc

    def _missing(self, folder: str, rel: str) -> CorruptCheckpointError:
        where = self.storage.url_of(*([folder] if folder else []), *rel.split("/"))
        return CorruptCheckpointError(
            f"{where} is listed in the manifest {self.storage.url_of(MANIFEST_NAME)!r} but "
            "missing from storage: the checkpoint was damaged after it was committed; restore "
            "from an earlier checkpoint", path=self.path)

    def _verify(self, local: str, folder: str, expected: Mapping[str, FileEntry]) -> None:
        """Check each file the manifest lists against its size (always) and sha256 (unless
        ``verify_checksums`` is off)."""
        for rel, entry in sorted(expected.items()):
            full = os.path.join(local, *rel.split("/"))
            try:
                size = os.path.getsize(full)
            except FileNotFoundError:
                raise self._missing(folder, rel) from None
            digest = _sha256_of(full) if self.verify_checksums and size == entry.size else None
            if size == entry.size and (digest is None or digest == entry.sha256):
                continue
            where = self.storage.url_of(*([folder] if folder else []), *rel.split("/"))
            got = f"{size} bytes" + (f" with sha256 {digest}" if digest else "")
            raise CorruptCheckpointError(
                f"{where} does not match the manifest {self.storage.url_of(MANIFEST_NAME)!r}: "
                f"it has {got}, the manifest records {entry.size} bytes with sha256 "
                f"{entry.sha256}. The file changed after the checkpoint was committed; restore "
                "from an earlier checkpoint (a run does so by itself), or, if the change is "
                "intended, skip the check with CheckpointConfig(verify_checksums=False)",
                path=self.path)


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_dict(data: Mapping[str, Any], target: str) -> None:
    """A dict checkpoint's folder: ``dict_checkpoint.pkl``; or, for a dict that ``to_dict`` made
    of a folder, that folder's files back, with its other keys as ``{key}.meta.pkl``."""
    import cloudpickle

    if FS_CHECKPOINT_KEY in data:
        _unpack_folder(data[FS_CHECKPOINT_KEY], target)
        for key, value in data.items():
            if key != FS_CHECKPOINT_KEY:
                with open(os.path.join(target, f"{key}{METADATA_SUFFIX}"), "wb") as f:
                    cloudpickle.dump(value, f)
        return
    with open(os.path.join(target, DICT_CHECKPOINT_FILE), "wb") as f:
        cloudpickle.dump(dict(data), f)


def _read_pickle(path: str) -> Any:
    import cloudpickle

    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return cloudpickle.load(f)


def _read_dict(local: str) -> dict[str, Any] | None:
    """The dict of a dict checkpoint's folder (with a ``_preprocessor`` file beside it folded
    in, as Ray 2.5 kept the trainer's preprocessor in the dict), or ``None``."""
    data = _read_pickle(os.path.join(local, DICT_CHECKPOINT_FILE))
    if data is None:
        return None
    preprocessor = _read_pickle(os.path.join(local, PREPROCESSOR_KEY))
    if preprocessor is not None:
        data[PREPROCESSOR_KEY] = preprocessor
    return dict(data)


def _pack_folder(local: str) -> dict[str, Any]:
    """Ray 2.5's ``to_dict`` of a folder checkpoint: its files as one tar archive (bytes), and
    each ``{key}.meta.pkl`` file as the key ``key``."""
    stream = io.BytesIO()
    data: dict[str, Any] = {}
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(local)):
            full = os.path.join(local, name)
            if name.endswith(METADATA_SUFFIX) and os.path.isfile(full):
                data[name[:-len(METADATA_SUFFIX)]] = _read_pickle(full)
            else:
                tar.add(full, arcname=name)
    data[FS_CHECKPOINT_KEY] = stream.getvalue()
    return data


def _unpack_folder(archive: bytes, target: str) -> None:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):
            # refuses absolute paths, links out of the folder and device files
            tar.extractall(target, filter="data")
            return
        root = os.path.realpath(target)  # Pythons before 3.10.12 have no filters
        for member in tar.getmembers():
            dest = os.path.realpath(os.path.join(root, member.name))
            if not (member.isfile() or member.isdir()) or os.path.commonpath([root, dest]) != root:
                raise ValueError(f"the fs_checkpoint archive holds {member.name!r}, which is not "
                                 "a plain file or folder inside the checkpoint")
        tar.extractall(target)
