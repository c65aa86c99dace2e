"""A folder of images named by site id (``{site_id}.jpg``), cut into patch tokens."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from miam.data.contract.patches import patch_names, patchify
from miam.data.contract.spec import ModalitySpec
from miam.data.files.io import Encoder, Sites, Standardizer
from miam.data.files.schema import IMAGE_SUFFIXES, ImagesSection
from miam.errors import DatasetNotFoundError


def image_index(folder: Path) -> dict[str, Path]:
    """``{site id: file}`` for the images directly in ``folder`` (suffix case ignored).

    Raises:
        DatasetNotFoundError: the folder does not exist.
    """
    if not folder.is_dir():
        raise DatasetNotFoundError("files dataset", folder.parent, f"the image folder {folder.name!r}",
                                   "Check 'folder' in the images section.")
    with os.scandir(folder) as it:
        return {Path(e.name).stem: Path(e.path) for e in it
                if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES}


class ImageFolder(Encoder):
    """Images resized to ``size`` x ``size``, scaled to [0, 1], standardised per channel, cut into tokens.

    A site with no file has all its tokens hidden; an unreadable file too, with a warning
    naming it.
    """

    def __init__(self, sec: ImagesSection, folder: Path, progress: bool = True) -> None:
        self.name, self.source, self.folder, self.progress = sec.name, sec.name, folder, progress
        self.size, self.token, self.mode = sec.size, sec.token_size, sec.mode
        self.channels = len(Image.new(self.mode, (1, 1)).getbands())
        self.scaler = Standardizer((1, 3, 4))
        image_index(folder)  # fail early on a wrong folder

    @property
    def spec(self) -> ModalitySpec:
        g = self.size // self.token
        return ModalitySpec(self.name, "image", g * g, (self.channels, self.token, self.token),
                            patch_names(g, g), grid=(g, g))

    def raw(self, sites: Sites, path: Path | None = None) -> np.ndarray:
        out = np.full((len(sites), self.channels, self.size, self.size), np.nan, dtype=np.float32)
        if sites.ids is not None:
            index = image_index(Path(path or self.folder))
            for i, sid in enumerate(tqdm(sites.ids, desc=f"read {self.name} images", unit="img", leave=False,
                                         disable=not self.progress or len(sites) < 200)):
                f = index.get(str(sid))
                if f is not None:
                    out[i] = self._decode(f)
        return patchify(out, self.token)

    def _decode(self, f: Path) -> np.ndarray:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert(self.mode).resize((self.size, self.size), Image.BILINEAR))
        except (OSError, SyntaxError, ValueError) as e:
            warnings.warn(f"{f}: unreadable image ({e}); its tokens are hidden.", stacklevel=3)
            return np.full((self.channels, self.size, self.size), np.nan, dtype=np.float32)
        return arr.reshape(self.size, self.size, -1).transpose(2, 0, 1).astype(np.float32) / 255.0

    def fit(self, raw: np.ndarray) -> None:
        self.scaler.fit(raw)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        return self.scaler.transform(raw)

    def describe(self) -> str:
        return f"{self.folder.name}/: {self.size} x {self.size} px"

    def hidden_note(self, sites: Sites, raw: np.ndarray) -> str | None:
        if sites.ids is None:
            return None
        index = image_index(self.folder)
        absent = int(sum(str(s) not in index for s in sites.ids))
        unreadable = int(np.isnan(raw).reshape(len(raw), -1).all(axis=1).sum()) - absent
        if not absent and not unreadable:
            return None
        return f"{self.folder}: {absent} site(s) without an image file" + (
            f", {unreadable} unreadable" if unreadable > 0 else "")
