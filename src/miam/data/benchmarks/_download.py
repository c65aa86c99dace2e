"""Download helpers written once for every benchmark: fetch, check, extract, or say what to do.

The ladder follows torchgeo's ``_verify`` (``torchgeo/datasets/eurosat.py``):

1. every file the loader needs is under ``root``: done;
2. else the published archive is in ``root``: check it (with ``checksum``), extract it;
3. else with ``download=True``: fetch it from its URL, check it, extract it;
4. else raise :class:`~miam.errors.DatasetNotFoundError` naming the root, the missing
   file, the archive to fetch and where to put it.

A failed fetch (no network, a URL that needs a login) raises the same error with the
reason, so offline users get the manual fix instead of a traceback from urllib.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from miam.errors import DatasetNotFoundError, MiamError


class ChecksumError(MiamError, OSError):
    """A downloaded or local file whose sha256 is not the published one."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it lives, its name in ``root`` and its sha256 if published.

    Args:
        url: the download address (``file://`` works, which the tests use).
        filename: the name it takes under ``root``.
        sha256: the published hex digest, or None where the publisher gives none.
        extract: unpack it (zip/tar) into ``root`` after the download.
    """

    url: str
    filename: str
    sha256: str | None = None
    extract: bool = False


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks.

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x")
        >>> _ = open(p, "wb").write(b"abc")
        >>> sha256sum(p)[:16]
        'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, expected: str | None) -> None:
    """Raise :class:`ChecksumError` if ``path`` does not hash to ``expected`` (None: no check)."""
    if expected is None:
        return
    got = sha256sum(path)
    if got != expected.lower():
        raise ChecksumError(f"{path} has sha256 {got}, expected {expected}: the file is corrupt or "
                            f"another version; delete it and download it again.")


def download_url(url: str, dest: Path, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` through a ``.part`` file, with a progress bar.

    Raises:
        urllib.error.URLError: the fetch failed (caught by :func:`verify`).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    part.replace(dest)
    return dest


def verify(
    dataset: str,
    root: str | Path,
    required: Sequence[str],
    files: Sequence[RemoteFile] = (),
    download: bool = False,
    checksum: bool = False,
    manual: str = "",
) -> None:
    """The torchgeo ladder: present, else extract, else download, else a clear error.

    Args:
        dataset: the dataset's name, for messages.
        root: the folder the loader reads.
        required: paths relative to ``root`` that must exist once the data is in place.
        files: the published files (archives are extracted into ``root``).
        download: allow fetching ``files`` from their URLs.
        checksum: check the sha256 of local and fetched files (where one is published).
        manual: how to get the data by hand, appended to the error.

    Raises:
        DatasetNotFoundError: a required path is missing and cannot be fetched.
        ChecksumError: with ``checksum``, a file does not match its published sha256.
    """
    root = Path(root)
    missing = [r for r in required if not (root / r).exists()]
    if not missing:
        return
    if not files:
        raise DatasetNotFoundError(dataset, root, missing[0], manual)
    for f in files:
        local = root / f.filename
        if not local.exists():
            if not download:
                hint = (f"Pass download=True to fetch {f.filename} from {f.url}, or put it there by hand. "
                        + manual).strip()
                raise DatasetNotFoundError(dataset, root, missing[0], hint)
            try:
                download_url(f.url, local)
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise DatasetNotFoundError(
                    dataset, root, missing[0],
                    f"Downloading {f.url} failed ({e}). Download it by hand to {local}. {manual}".strip(),
                ) from e
        if checksum:
            check_sha256(local, f.sha256)
        if f.extract:
            shutil.unpack_archive(str(local), str(root))
    still = [r for r in required if not (root / r).exists()]
    if still:
        raise DatasetNotFoundError(dataset, root, still[0],
                                   f"The published files are there but do not hold it. {manual}".strip())
