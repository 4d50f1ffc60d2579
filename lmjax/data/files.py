"""Where datasets live on disk, and reading their files with errors a user can act on.

Raw files come from a local directory laid out like `shared/data` (`<data_dir>/ptb/ptb.train.txt`, ...): the
`data_dir` argument, else `$LMJAX_DATA_DIR`. Prepared TFDS datasets go under `$LMJAX_TFDS_DIR`
(default `~/.cache/lmjax/tfds`). Every problem with a user's files is a `DataError` whose one line says the fix.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import lzma
import os
import socket
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

DATA_DIR_ENV = "LMJAX_DATA_DIR"
TFDS_DIR_ENV = "LMJAX_TFDS_DIR"
FIX = (f"set {DATA_DIR_ENV} to a directory laid out like shared/data (ptb/ptb.train.txt ...) "
       "or --set data.data_dir=...")
REPLACE = "replace it with the file from the dataset's source (see its PROVENANCE.md)"


class DataError(ValueError):
    """A data problem a user can fix; the one-line message says how."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local dataset root: `data_dir`, else `$LMJAX_DATA_DIR`, else None (embedded copy or download)."""
    given = data_dir or os.environ.get(DATA_DIR_ENV)
    if not given:
        return None
    path = Path(given).expanduser()
    if not path.is_dir():
        origin = "data_dir" if data_dir else f"${DATA_DIR_ENV}"
        raise DataError(f"data directory {path} (from {origin}) does not exist: {FIX}")
    return path


def tfds_dir() -> Path:
    """Where prepared datasets are cached: `$LMJAX_TFDS_DIR`, default `~/.cache/lmjax/tfds`."""
    return Path(os.environ.get(TFDS_DIR_ENV) or "~/.cache/lmjax/tfds").expanduser()


# Decompression and archive errors that mean "this file is damaged", as opposed to a bug in the reader.
_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError, zipfile.BadZipFile, tarfile.TarError)


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Guard a read of `path`: missing, empty or damaged files become one-line `DataError`s."""
    if not path.is_file():
        raise DataError(f"{path} is missing: {FIX}")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty: {REPLACE}")
    try:
        yield
    except _CORRUPT as e:
        raise DataError(f"{path} is damaged ({type(e).__name__}: {' '.join(str(e).split())}): {REPLACE}") from None


def decompress(data: bytes) -> bytes:
    """`data`, gunzipped or unxz'd when it starts with that format's magic bytes (dictzip is gzip)."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def decode(data: bytes, name: str, encoding: str = "utf-8") -> str:
    """The text of `data`; `name` says which file in the error."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{name} is not {encoding.upper()} (bad byte at offset {e.start}): convert it with "
                        f"`iconv -t {encoding.upper()}` or {REPLACE}") from None


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole of a (possibly gzip/xz-compressed) text file."""
    with reading(path):
        data = decompress(path.read_bytes())
    if not data:
        raise DataError(f"{path} is empty: {REPLACE}")
    return decode(data, str(path), encoding)


def iter_archive(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of every regular file in the zip or (compressed) tar archive `path`, in archive order."""
    with reading(path):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        yield info.filename, archive.read(info)
        elif tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    if member.isfile():
                        yield member.name, archive.extractfile(member).read()
        else:
            raise DataError(f"{path} is damaged (neither a zip nor a tar archive): {REPLACE}")


def read_deb_member(path: Path, member: str) -> bytes:
    """Bytes of `member` (e.g. "usr/share/dictd/gcide.dict.dz") from the Debian package `path`.

    A .deb is an `ar` archive (8-byte magic, then 60-byte headers: name[16] ... size[10] at 48, 2-byte end) whose
    `data.tar.*` member holds the installed files.
    """
    with reading(path):
        blob = path.read_bytes()
        offset = 8
        while offset + 60 <= len(blob):
            name, size = blob[offset:offset + 16].strip(), int(blob[offset + 48:offset + 58])
            offset += 60
            if name.startswith(b"data.tar"):
                with tarfile.open(fileobj=io.BytesIO(blob[offset:offset + size]), mode="r:*") as data:
                    for info in data:
                        if info.isfile() and info.name.removeprefix("./") == member:
                            return data.extractfile(info).read()
            offset += size + size % 2  # members are 2-byte aligned
    raise DataError(f"{path} has no {member}: {REPLACE}")


def check_reachable(url: str, what: str) -> None:
    """Fail in seconds when `url`'s host cannot be reached: TFDS retries an unreachable host for minutes."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=10).close()
    except OSError as e:
        raise DataError(f"{what}, and its source {parts.hostname} is unreachable ({e.strerror or e}): {FIX}") from None
