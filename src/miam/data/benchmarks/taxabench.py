"""TaxaBench-8k: multimodal species classification (location, environment, image, audio, satellite).

Dataset card
------------
**Task.** One species per observation (``multiclass``, top-1 accuracy): 8,813
iNaturalist observations in ``test_df.csv``; the MIAM paper keeps the species with at
least 10 observations (``min_samples=10``; its ``taxabench_num_species_10.csv``) and
splits 80/10/10 stratified by species (``split="stratified"``; our reading, the dataset
ships no split: its train/val CSVs were deleted from the hub).

**Source.** Hugging Face dataset ``MVRL/TaxaBench-8k`` (MIT; card: "use test_df.csv,
8,813 samples"); the precomputed per-modality embeddings the paper trains on are
``taxabench_embeds_loc_env_img_aud_sat.pt`` in the model repository ``zbirobin/MIAM``.
No checksums are published.

**Layout read** (the hub tree; mvrl/TaxaBind loaders)::

    test_df.csv                     # id, latitude, longitude, scientific_name, ... (iNaturalist export)
    bioclim_elevation_scaled.npy    # SINR grid, float16 H x W x 20: elevation, bio1..bio19, z-scored, NaN at sea
    taxabench_images/               # ground images, one per observation id
    sat_images/sentinel/            # Sentinel-2 tiles, one per observation id
    taxabench_sound/                # recordings, e.g. 100418042.m4a
    taxabench_embeds_loc_env_img_aud_sat.pt   # (zbirobin/MIAM) the paper's 512-d embeddings

**Modalities** (same names in both modes): ``location``, ``env``, ``image``, ``audio``,
``satellite``.

* ``features="embeddings"`` (default, as the paper): each modality is its 512-d
  embedding, as ``embedding_tokens`` tokens of ``512 / embedding_tokens`` values. The
  file's inner format is not published: we accept a dict of ``[N, d]`` tensors keyed by
  a name containing ``loc``/``env``/``img``/``aud``/``sat`` (optionally with ``ids``
  matching ``test_df.csv``'s ``id``), or one ``[N, 5, d]`` / ``[N, 5 d]`` tensor in the file
  name's order; anything else is an error that says what was found. A NaN or all-zero
  embedding (a CLIP-style embedding is never zero) is a missing modality.
* ``features="raw"``: ``location`` = one ``coords`` token (lon, lat); ``env`` = the 20
  SINR values at the observation (column ``int((lon + 180) W / 360)``, row
  ``int((90 - lat) H / 180)``, as TaxaBind's EnvBind loader), NaN hidden; ``image`` and
  ``satellite`` = the JPEG centre-cropped square, resized to ``image_size`` and cut into
  ``patch_size`` patches; ``audio`` = log-mel frames (16 kHz mono, 32 mel bands, 20
  tokens of 16 frames = the first 10.2 s, as SoundBind's 10 s), frames past the end of
  a short clip hidden. Files are matched by the observation id at the start of their
  name (``{id}.jpg`` or iSatNat's ``{id}_{lat}_{lon}.jpeg``: the hub's naming was not
  confirmed). Audio is decoded by FFmpeg through PyAV (``av``: WAV, FLAC, OGG, MP3 and
  the hub's ``.m4a``/AAC); a file FFmpeg cannot decode is hidden, counted and named.

**Citation.** Sastry et al., *TaxaBind: A Unified Embedding Space for Ecological
Applications*, WACV 2025.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from miam._validation import check_choice
from miam.data.benchmarks._download import RemoteFile, verify
from miam.data.benchmarks.cached import benchmark_loader
from miam.data.benchmarks.raw import RawSource
from miam.data.benchmarks.readers import CorruptFileError, align, check_unique, integer_ids, numeric, read_csv
from miam.data.contract.patches import patch_names, patchify
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import DataFormatError, check_names

MODALITIES = ("location", "env", "image", "audio", "satellite")
#: substrings that name each modality in the embeddings file, in the file name's order
EMBED_KEYS = {"location": "loc", "env": "env", "image": "img", "audio": "aud", "satellite": "sat"}
EMBEDDINGS = "taxabench_embeds_loc_env_img_aud_sat.pt"
TABLE, ENV_GRID = "test_df.csv", "bioclim_elevation_scaled.npy"
FOLDERS = {"image": "taxabench_images", "satellite": "sat_images/sentinel", "audio": "taxabench_sound"}
HUB = "https://huggingface.co/datasets/MVRL/TaxaBench-8k/resolve/main/"
SAMPLE_RATE, N_FFT, HOP, N_MELS, FRAMES, AUDIO_TOKENS = 16_000, 1024, 512, 32, 16, 20


def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular mel filterbank ``[n_mels, n_fft // 2 + 1]`` (HTK mel scale)."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)
    edges = 700.0 * (10 ** (np.linspace(0.0, mel(sample_rate / 2), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


_MEL_T = np.ascontiguousarray(mel_filters(SAMPLE_RATE, N_FFT, N_MELS).T, dtype=np.float32)


def log_mel_tokens(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """First 10.2 s of a recording -> (tokens ``[20, 1, 32, 16]``, present ``[20]``).

    Examples:
        >>> t, p = log_mel_tokens(np.sin(np.arange(16000 * 3) * 0.3), 16000)
        >>> t.shape, int(p.sum())  # 3 s of sound fill 5 tokens of 0.512 s
        ((20, 1, 32, 16), 5)
    """
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        n_out = int(len(wave) * SAMPLE_RATE / sample_rate)
        wave = np.interp(np.arange(n_out) / SAMPLE_RATE, np.arange(len(wave)) / sample_rate, wave)
    n_frames = AUDIO_TOKENS * FRAMES
    need = (n_frames - 1) * HOP + N_FFT
    valid_frames = max(0, (len(wave) - N_FFT) // HOP + 1) if len(wave) >= N_FFT else 0
    x = np.zeros(need, dtype=np.float32)
    x[: min(len(wave), need)] = wave[:need]
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]                 # [320, 1024]
    power = np.abs(np.fft.rfft(frames * np.hanning(N_FFT).astype(np.float32), axis=1)) ** 2   # [320, 513]
    logmel = np.log(power.astype(np.float32) @ _MEL_T + 1e-6).T                        # [32, 320]
    tokens = logmel.reshape(N_MELS, AUDIO_TOKENS, FRAMES).transpose(1, 0, 2)[:, None]
    present = (np.arange(AUDIO_TOKENS) + 1) * FRAMES <= valid_frames
    return tokens.astype(np.float32), present


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode a recording with FFmpeg (PyAV): float32 samples ``[n, channels]`` and the sample rate.

    Raises:
        CorruptFileError: FFmpeg cannot decode it, or it has no audio stream.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise CorruptFileError("no audio stream")
            stream = container.streams.audio[0]
            planar = av.AudioResampler(format="fltp")          # float32 [channels, samples] per frame
            chunks = [f.to_ndarray() for frame in container.decode(stream) for f in planar.resample(frame)]
            chunks += [f.to_ndarray() for f in planar.resample(None)]
            rate = stream.codec_context.sample_rate
    except av.FFmpegError as e:
        raise CorruptFileError(f"FFmpeg cannot decode it ({e})") from e
    if not chunks:
        raise CorruptFileError("no samples")
    return np.concatenate(chunks, axis=1).T, rate


def index_files(folder: Path) -> dict[int, Path]:
    """Map the observation id that starts each file name (``123.jpg``, ``123_45.1_-3.2.jpeg``) to its path."""
    out: dict[int, Path] = {}
    if folder.is_dir():
        with os.scandir(folder) as it:
            for e in it:
                m = re.match(r"(\d+)", e.name)
                if m and e.is_file():
                    out[int(m.group(1))] = Path(e.path)
    return out


def read_embeddings(path: Path, n_rows: int, ids: np.ndarray, report) -> dict[str, np.ndarray]:
    """The per-modality embeddings ``{modality: [n_rows, d]}`` aligned to ``test_df.csv``'s rows."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise DataFormatError(f"{path}: cannot be read as a tensor file with torch.load(weights_only=True) ({e}).") from e
    file_ids = None
    if isinstance(obj, dict):
        keys = {str(k).lower(): k for k in obj}
        id_key = next((keys[k] for k in keys if k in ("id", "ids", "observation_id", "obs_id")), None)
        if id_key is not None:
            file_ids = integer_ids(np.asarray(obj[id_key], dtype=np.float64), path, str(id_key))
        found = {}
        for m, sub in EMBED_KEYS.items():
            match = [keys[k] for k in keys if sub in k and keys[k] != id_key]
            if len(match) != 1:
                raise DataFormatError(f"{path}: expected one entry whose name contains {sub!r} (the {m} "
                                      f"embeddings); the file has keys {list(obj)}.")
            found[m] = torch.as_tensor(obj[match[0]]).float().numpy()
    elif isinstance(obj, torch.Tensor) and obj.ndim in (2, 3):
        x = obj.float().numpy()
        if x.ndim == 2:
            if x.shape[1] % 5:
                raise DataFormatError(f"{path}: a [N, D] tensor must hold 5 embeddings per row; got {list(x.shape)}.")
            x = x.reshape(len(x), 5, -1)
        if x.shape[1] != 5:
            raise DataFormatError(f"{path}: expected [N, 5, d] (loc, env, img, aud, sat); got {list(x.shape)}.")
        found = {m: x[:, i] for i, m in enumerate(EMBED_KEYS)}
    else:
        raise DataFormatError(f"{path}: expected a dict of [N, d] tensors or an [N, 5, d] tensor; "
                              f"got {type(obj).__name__}.")
    shapes = {m: v.shape for m, v in found.items()}
    if len({s for s in shapes.values()}) != 1 or len(next(iter(shapes.values()))) != 2:
        raise DataFormatError(f"{path}: every modality needs an [N, d] array of the same shape; got {shapes}.")
    if file_ids is None:
        if len(found["location"]) != n_rows:
            raise DataFormatError(f"{path}: {len(found['location'])} rows but {TABLE} has {n_rows} and the file "
                                  f"gives no ids to align them.")
        return found
    rows = align(file_ids, ids, path, "id", report)
    out = {}
    for m, v in found.items():
        aligned = v[np.maximum(rows, 0)].copy()
        aligned[rows < 0] = np.nan
        out[m] = aligned
    return out


class TaxaBenchSource(RawSource):
    """TaxaBench-8k under ``root`` (the hub folder, plus the embeddings file in ``embeddings`` mode).

    Args:
        root: folder holding ``test_df.csv``.
        modalities: any of ``("location", "env", "image", "audio", "satellite")``.
        features: ``"embeddings"`` (the paper's 512-d embeddings) or ``"raw"`` (files decoded here).
        embedding_tokens: tokens per embedding (512 must divide by it).
        min_samples: keep species with at least this many observations (paper: 10).
        image_size, patch_size: raw images resized to ``image_size`` and cut into patches.

    Its loader splits ``stratified`` by species by default (the paper's reading), or ``spatial``.
    """

    name = "taxabench"
    title = "TaxaBench-8k"
    default_split = "stratified"
    #: the hub's files; the embeddings live in the MIAM model repository
    files = (RemoteFile(HUB + TABLE, TABLE), RemoteFile(HUB + ENV_GRID, ENV_GRID),
             RemoteFile("https://huggingface.co/zbirobin/MIAM/resolve/main/" + EMBEDDINGS, EMBEDDINGS))

    def __init__(self, root: str | Path, modalities: Sequence[str] = MODALITIES, features: str = "embeddings",
                 embedding_tokens: int = 1, min_samples: int = 10, image_size: int = 64, patch_size: int = 16,
                 download: bool = False, checksum: bool = False) -> None:
        super().__init__(root)
        check_names("TaxaBench", "modality", list(modalities), MODALITIES)
        check_choice("TaxaBench", "features", features, ("embeddings", "raw"))
        self.modalities = [m for m in MODALITIES if m in modalities]
        self.features, self.embedding_tokens, self.min_samples = features, int(embedding_tokens), int(min_samples)
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        required = [TABLE] + ([EMBEDDINGS] if features == "embeddings" else [])
        if features == "raw" and "env" in self.modalities:
            required.append(ENV_GRID)
        wanted = [f for f in self.files if f.filename in required]
        verify("TaxaBench-8k", self.root, required, wanted, download, checksum,
               manual="Download test_df.csv (and the media folders) from the MVRL/TaxaBench-8k dataset and "
                      f"{EMBEDDINGS} from the zbirobin/MIAM model repository into root.")

    def cache_params(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "features": self.features, "embedding_tokens": self.embedding_tokens,
                "min_samples": self.min_samples, "image_size": self.image_size, "patch_size": self.patch_size}

    def table_files(self) -> list[Path]:
        files = [self.root / TABLE]
        if self.features == "embeddings":
            files.append(self.root / EMBEDDINGS)
        elif "env" in self.modalities:
            files.append(self.root / ENV_GRID)
        return files

    def sample_dirs(self) -> list[Path]:
        if self.features == "embeddings":
            return []
        return [self.root / FOLDERS[m] for m in ("image", "satellite", "audio") if m in self.modalities]

    def token_dtype(self, modality: str) -> np.dtype:
        raw_image = self.features == "raw" and modality in ("image", "satellite")
        return np.dtype(np.uint8 if raw_image else np.float32)

    def stat_axes(self, spec: ModalitySpec) -> tuple[int, ...]:
        if spec.kind == "image":
            return (0, 2, 3)
        if spec.kind == "audio":
            return (0, 1, 2, 3)  # one mean/std for all log-mel values
        if spec.kind == "embedding":
            return (0, 1)        # one mean/std per modality: keeps the embedding's geometry
        return ()

    def open(self) -> None:
        path = self.root / TABLE
        table = read_csv(path, ["id", "latitude", "longitude", "scientific_name"], low_memory=False)
        ids = integer_ids(numeric(table, ["id"], path)[:, 0], path, "id")
        check_unique(ids, path, "id")
        coords = numeric(table, ["longitude", "latitude"], path)
        names = table["scientific_name"].astype(str).to_numpy()
        kinds, counts = np.unique(names, return_counts=True)
        self.species = kinds[counts >= self.min_samples]
        keep = np.isin(names, self.species)
        self.report.notes.append(f"{len(self.species)} of {len(kinds)} species have >= {self.min_samples} "
                                 f"observations; {int((~keep).sum())} observations of the others are left out.")
        if self.features == "embeddings":
            emb = read_embeddings(self.root / EMBEDDINGS, len(table), ids, self.report)
            self.embeddings = {m: v[keep] for m, v in emb.items()}
        self.ids, self.coords = ids[keep], coords[keep]
        self.labels = np.searchsorted(self.species, names[keep])
        self.n_rows = len(self.ids)
        self.specs = [self._spec(m) for m in self.modalities]
        if self.features == "raw":
            self.paths = {m: index_files(self.root / FOLDERS[m]) for m in FOLDERS if m in self.modalities}
            if "env" in self.modalities:
                self.env = self._env_values()
        self.task = TaskSpec("multiclass", len(self.species), tuple(self.species))

    def _spec(self, m: str) -> ModalitySpec:
        if self.features == "embeddings":
            d = self.embeddings[m].shape[1]
            k = self.embedding_tokens
            if d % k:
                raise DataFormatError(f"embedding_tokens={k} does not divide the {d}-d {m} embedding.")
            return ModalitySpec(m, "embedding", k, (d // k,), tuple(f"{m}[{i * d // k}:{(i + 1) * d // k}]"
                                                                   for i in range(k)))
        if m == "location":
            return ModalitySpec(m, "coords", 1, (2,), ("lon_lat",))
        if m == "env":
            return ModalitySpec(m, "tabular", 20, (1,), ("elevation", *(f"bio{i}" for i in range(1, 20))))
        if m == "audio":
            return ModalitySpec(m, "audio", AUDIO_TOKENS, (1, N_MELS, FRAMES),
                                tuple(f"{i * FRAMES * HOP / SAMPLE_RATE:.2f}s" for i in range(AUDIO_TOKENS)))
        g = self.image_size // self.patch_size
        return ModalitySpec(m, "image", g * g, (3, self.patch_size, self.patch_size), patch_names(g, g), grid=(g, g))

    def _env_values(self) -> np.ndarray:
        path = self.root / ENV_GRID
        grid = np.load(path, mmap_mode="r")
        if grid.ndim != 3 or grid.shape[2] != 20:
            raise DataFormatError(f"{path}: expected an H x W x 20 grid (elevation, bio1..bio19), got {grid.shape}.")
        h, w = grid.shape[:2]
        col = np.clip(((self.coords[:, 0] + 180) * w / 360).astype(np.int64), 0, w - 1)
        row = np.clip(((90 - self.coords[:, 1]) * h / 180).astype(np.int64), 0, h - 1)
        return np.asarray(grid[row, col], dtype=np.float32)

    def rows(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "names": self.ids.astype(str), "coords": self.coords}

    def _image(self, m: str, obs: int) -> np.ndarray | None:
        path = self.paths[m].get(obs)
        if path is None:
            self.report.missing(m)
            return None
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                side = min(im.size)
                left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
                im = im.crop((left, top, left + side, top + side)).resize((self.image_size,) * 2, Image.BILINEAR)
                return np.asarray(im).transpose(2, 0, 1)
        except (OSError, SyntaxError, ValueError) as e:
            self.report.corrupt(m, f"{path} (id {obs})", str(e))
            return None

    def _audio(self, obs: int) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.paths["audio"].get(obs)
        if path is None:
            self.report.missing("audio")
            return None
        try:
            wave, sr = read_audio(path)
        except CorruptFileError as e:
            self.report.corrupt("audio", f"{path} (id {obs})", str(e))
            return None
        return log_mel_tokens(wave, sr)

    def fill(self, start: int, stop: int) -> dict[str, np.ndarray]:
        n = stop - start
        out: dict[str, np.ndarray] = {"target": self.labels[start:stop].astype(np.int64)}
        for spec in self.specs:
            m = spec.name
            if self.features == "embeddings":
                v = self.embeddings[m][start:stop]
                ok = np.isfinite(v).all(axis=1) & (np.abs(v).sum(axis=1) > 0)
                out[f"tokens/{m}"] = np.where(ok[:, None], v, 0).reshape(n, spec.n_tokens, *spec.token_shape)
                out[f"present/{m}"] = np.repeat(ok[:, None], spec.n_tokens, axis=1)
            elif m in ("location", "env"):
                v = self.coords[start:stop][:, None, :] if m == "location" else self.env[start:stop][..., None]
                ok = np.isfinite(v).all(axis=2)
                out[f"tokens/{m}"] = np.where(np.isfinite(v), v, 0).astype(np.float32)
                out[f"present/{m}"] = ok
            elif m == "audio":
                vals = np.zeros((n, spec.n_tokens, *spec.token_shape), dtype=np.float32)
                ok = np.zeros((n, spec.n_tokens), dtype=bool)
                for k, obs in enumerate(self.ids[start:stop]):
                    got = self._audio(int(obs))
                    if got is not None:
                        vals[k], ok[k] = got
                out[f"tokens/{m}"], out[f"present/{m}"] = vals, ok
            else:
                img = np.zeros((n, 3, self.image_size, self.image_size), dtype=np.uint8)
                ok = np.zeros(n, dtype=bool)
                for k, obs in enumerate(self.ids[start:stop]):
                    x = self._image(m, int(obs))
                    if x is not None:
                        img[k], ok[k] = x, True
                out[f"tokens/{m}"] = patchify(img, self.patch_size)
                out[f"present/{m}"] = np.repeat(ok[:, None], spec.n_tokens, axis=1)
        return out


#: TaxaBench-8k as a cached dataset: see :func:`~miam.data.benchmarks.cached.benchmark_loader`
load_taxabench = benchmark_loader(TaxaBenchSource)
