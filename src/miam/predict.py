"""Predictions of a trained model on new sites (a table) or on every cell of a raster grid.

A model trained with MIAM scores well on any subset of its inputs, so each site or pixel
uses whatever modalities it has: a pixel has the raster modalities (a table or a photo
has no pixel), a site outside a raster still has its tables. ``modalities`` restricts the
prediction to chosen modalities (for instance climate only, to project onto future
climate rasters given with ``sources``).

Grid predictions are written window by window (rows of at most ``window_pixels``
pixels, fewer when a pixel's tokens are large; each window one TIFF strip), so memory
does not depend on the grid's size (``benchmarks/predict_grid.py`` measures it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from miam.data.contract.batch import MultimodalBatch, nan_to_present
from miam.data.contract.spec import spec_difference
from miam.data.files.grid import Grid
from miam.data.files.io import Sites
from miam.data.files.loader import FilesData
from miam.errors import ConfigError, InvalidParameterError
from miam.evaluation.subsets import token_groups

#: a grid window holds at most this many pixels by default
WINDOW_PIXELS = 1 << 16
#: about this many bytes of tokens are read at once (fewer pixels per window for image modalities)
TOKEN_BYTES = 256 << 20


class Predictor:
    """A trained model and the fitted ``files`` encoders of its training data.

    Args:
        model: the trained network (``MiamModule.model``).
        data: the :class:`~miam.data.files.loader.FilesData` the model was trained on, built.
        groups: the run's modality groups (``data.groups``), naming what ``modalities`` selects.
        batch_size: sites or pixels per forward pass.
        device: where the model runs.
    """

    def __init__(self, model: torch.nn.Module, data: FilesData, groups: Mapping[str, Sequence[str]] | None = None,
                 batch_size: int = 4096, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.data = data
        self.task = model.task
        self.group_names, self.token_group = token_groups(model.specs, groups)
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
                        batch_size: int = 4096, device: str = "cpu") -> Predictor:
        """Load a checkpoint and rebuild its ``files`` data from the run's config.

        Args:
            checkpoint: a ``.ckpt`` written by ``miam train``.
            config: the run's config (default: ``<ckpt dir>/../config.yaml``).
            overrides: ``section.key=value`` changes to the config.

        Raises:
            ConfigError: a missing file, a run not trained on a ``files`` dataset, or data
                that no longer matches the checkpoint's modalities and outputs.
        """
        from miam.config import load_config
        from miam.training import MiamModule

        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise ConfigError(f"Checkpoint {str(ckpt)!r} does not exist.")
        config = Path(config) if config else ckpt.resolve().parent.parent / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"No config for checkpoint {str(ckpt)!r}: {str(config)!r} does not exist; pass the "
                              f"run's config with --config.")
        cfg = load_config(config, overrides)
        if cfg.data.name != "files":
            raise ConfigError(f"{config}: predictions on new sites or grids need a run trained on a 'files' dataset "
                              f"(data.name: files); this run used {cfg.data.name!r}.")
        module = MiamModule.load_from_checkpoint(str(ckpt), map_location="cpu")
        data = FilesData(**cfg.data.params)
        ds = data.build()
        check_same_data(module.specs, data.specs, module.task, ds.task, ckpt, config)
        return cls(module.model, data, module.hparams.get("groups"), batch_size, device)

    # ---- the forward pass --------------------------------------------------------------
    def chunk(self, wanted: int) -> int:
        """Points encoded at once: ``wanted``, fewer when one point's tokens are large (image patches).

        Example: 16 x 16 px RGB images as 16 tokens cost ~12 kB a point in float32, so a
        window holds at most ~5,000 points, not 65,536.
        """
        per_point = 4 * 4 * sum(s.n_tokens * s.token_size for s in self.model.specs)  # raw, transformed, tensors
        return int(max(1, min(wanted, TOKEN_BYTES // per_point)))

    def mask(self, modalities: Sequence[str] | None) -> torch.Tensor:
        """Token mask [T] of the chosen modalities (groups); all tokens when None."""
        if modalities is None:
            return torch.ones_like(self.token_group, dtype=torch.bool)
        bad = [m for m in modalities if m not in self.group_names]
        if bad:
            raise InvalidParameterError(f"Unknown modality {bad}; valid names are {self.group_names}.")
        idx = torch.tensor([self.group_names.index(m) for m in modalities])
        return torch.isin(self.token_group, idx)

    @torch.no_grad()
    def predict_tokens(self, tokens: Mapping[str, np.ndarray], mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``[N, n_outputs]`` (NaN where no token is visible) and visible shares ``[N, G]``.

        Args:
            tokens: ``{modality: float32 [N, T_m, *shape]}`` with NaN where hidden (:meth:`FilesData.encode`).
            mask: bool [T], tokens the prediction may use.
        """
        values, present = {}, {}
        for s in self.model.specs:
            v, p = nan_to_present(torch.from_numpy(np.ascontiguousarray(tokens[s.name], dtype=np.float32)),
                                  len(s.token_shape))
            values[s.name], present[s.name] = v, p
        visible = torch.cat([present[s.name] for s in self.model.specs], dim=1) & mask
        n = visible.shape[0]
        owner = torch.nn.functional.one_hot(self.token_group, len(self.group_names)).float()   # [T, G]
        shares = (visible.float() @ owner) / owner.sum(0)
        probs = np.full((n, self.task.n_outputs), np.nan, dtype=np.float32)
        rows = torch.nonzero(visible.any(dim=1)).flatten()
        for a in range(0, len(rows), self.batch_size):
            idx = rows[a:a + self.batch_size]
            batch = MultimodalBatch({m: v[idx] for m, v in values.items()}, {m: p[idx] for m, p in present.items()},
                                    torch.zeros(len(idx))).to(self.device)
            logits = self.model(batch, visible[idx].to(self.device)).float()
            p = torch.softmax(logits, -1) if self.task.kind == "multiclass" else torch.sigmoid(logits)
            probs[idx.numpy()] = p.cpu().numpy()
        return probs, shares.numpy()

    # ---- a table of sites --------------------------------------------------------------
    def predict_sites(self, path: str | Path, sources: Mapping[str, Any] | None = None,
                      modalities: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per site of the table at ``path``: id and coordinates (under the table's own column
        names), a probability per output, the share of each modality's tokens the site had, the
        modalities used, and ``no_data`` (True where the site had no token at all: empty probabilities).

        The table has the training sites table's id and coordinate columns; table
        modalities read from the training sites table are read from this one.
        """
        sites, df, table_path = self.data.read_sites(path)
        _, xy = self.data.site_columns(df, table_path)
        sources = {**{name: table_path for name in self.data.sites_sources}, **(sources or {})}
        mask, step = self.mask(modalities), self.chunk(WINDOW_PIXELS)
        starts = range(0, len(sites), step)
        parts = [self.predict_tokens(self.data.encode(
            Sites(sites.ids[a:a + step], sites.x[a:a + step], sites.y[a:a + step], sites.crs), sources), mask)
            for a in tqdm(starts, desc="predict sites", unit="chunk", disable=len(starts) < 2)]
        probs, shares = (np.concatenate(p) for p in zip(*parts))
        names = list(self.task.output_names)
        coords = {xy[0]: sites.x, xy[1]: sites.y} if xy else {}
        out = pd.DataFrame({self.data.params.sites.id: sites.ids, **coords})
        out = pd.concat([out, pd.DataFrame(probs, columns=names)], axis=1)
        if self.task.kind == "multiclass":
            best = np.nan_to_num(probs, nan=-1).argmax(1)
            out["predicted"] = np.where(np.isnan(probs).all(1), None, np.asarray(names, dtype=object)[best])
        for g, name in enumerate(self.group_names):
            out[f"present_{name}"] = shares[:, g]
        used = shares > 0
        out["modalities"] = ["+".join(n for n, u in zip(self.group_names, row) if u) or "none" for row in used]
        out["no_data"] = ~used.any(axis=1)
        return out

    # ---- a raster grid -----------------------------------------------------------------
    def predict_grid(self, grid: Grid, out: str | Path, species: Sequence[str] | None = None,
                     top_k: int | None = None, richness: bool = False, sources: Mapping[str, Any] | None = None,
                     modalities: Sequence[str] | None = None, window_pixels: int = WINDOW_PIXELS,
                     progress: bool = True) -> dict[str, Any]:
        """Write a GeoTIFF on ``grid``: one band per species (default all), or the ``top_k``
        outputs' indices, or the expected ``richness`` (sum of probabilities).

        Pixels where no chosen modality has data are nodata. Returns a summary (bands,
        pixels, seconds, share of pixels with data).
        """
        import rasterio
        from rasterio.windows import Window

        bands, dtype, nodata, reduce = self._outputs(species, top_k, richness)
        mask = self.mask(modalities)
        windows = grid.windows(self.chunk(window_pixels))
        rows_per_window = windows[0][1] - windows[0][0]
        profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": len(bands),
                   "dtype": dtype, "crs": grid.crs, "transform": grid.transform, "nodata": nodata,
                   "compress": "deflate", "tiled": False, "blockysize": rows_per_window, "BIGTIFF": "IF_SAFER"}
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        start, with_data = time.perf_counter(), 0
        bar = tqdm(total=grid.width * grid.height, unit="px", unit_scale=True, desc="predict grid",
                   disable=not progress)
        with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(out, "w", **profile) as dst:
            for i, name in enumerate(bands, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(outputs=json.dumps(list(self.task.output_names)), task=self.task.kind,
                            modalities="+".join(modalities or self.group_names))
            for r0, r1, c0, c1 in windows:
                x, y = grid.centres(r0, r1, c0, c1)
                probs, _ = self.predict_tokens(self.data.encode(Sites(None, x, y, grid.crs), sources), mask)
                with_data += int((~np.isnan(probs[:, 0])).sum())
                block = reduce(probs).reshape(r1 - r0, c1 - c0, -1).transpose(2, 0, 1)
                dst.write(block.astype(dtype), window=Window(c0, r0, c1 - c0, r1 - r0))
                bar.update((r1 - r0) * (c1 - c0))
        bar.close()
        seconds = time.perf_counter() - start
        n = grid.width * grid.height
        return {"path": str(out), "bands": bands, "pixels": n, "seconds": seconds, "pixels_per_s": n / seconds,
                "share_with_data": with_data / n}

    def _outputs(self, species: Sequence[str] | None, top_k: int | None, richness: bool):
        """Band names, dtype, nodata and the function mapping probabilities [N, S] to bands [N, B]."""
        names = list(self.task.output_names)
        if sum(x is not None and x is not False for x in (species, top_k, richness or None)) > 1:
            raise InvalidParameterError("Choose one of species, top_k and richness.")
        if richness:
            if self.task.kind == "multiclass":
                raise InvalidParameterError("richness (the sum of presence probabilities) needs a multilabel "
                                            "task; this model predicts one class per site.")
            return ["richness"], "float32", float("nan"), lambda p: p.sum(1, keepdims=True)
        if top_k is not None:
            if not 1 <= top_k <= len(names):
                raise InvalidParameterError(f"top_k must be in [1, {len(names)}], got {top_k}.")

            def top(p: np.ndarray) -> np.ndarray:
                idx = np.argsort(-np.nan_to_num(p, nan=-1.0), axis=1, kind="stable")[:, :top_k]
                return np.where(np.isnan(p[:, :1]), -1, idx)

            return [f"top{k + 1}" for k in range(top_k)], "int16", -1, top
        chosen = names if species is None else list(species)
        bad = [s for s in chosen if s not in names]
        if bad:
            raise InvalidParameterError(f"Unknown species {bad}; the model predicts {names[:20]}"
                                        f"{' ...' if len(names) > 20 else ''}.")
        idx = [names.index(s) for s in chosen]
        return chosen, "float32", float("nan"), lambda p: p[:, idx]


def check_same_data(model_specs: Sequence[Any], data_specs: Sequence[Any], model_task: Any, data_task: Any,
                    checkpoint: Path, config: Path) -> None:
    """Raise a :class:`ConfigError` naming the first difference between the checkpoint and the data now."""
    problem = spec_difference(model_specs, data_specs)
    if problem is None and model_task.to_dict() != data_task.to_dict():
        problem = (f"outputs {list(model_task.output_names)[:5]} in the checkpoint, "
                   f"{list(data_task.output_names)[:5]} in the data")
    if problem:
        raise ConfigError(f"{checkpoint} does not match the data that {config} describes now ({problem}); were the "
                          f"files changed since training?")
