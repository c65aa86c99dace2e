"""Masked self-supervised pretraining on unlabelled sites, and fine-tuning from it, on the one trainer.

:class:`PretrainModule` is a :class:`~miam.training.module.MiamModule` whose step hides tokens with
the configured strategy (any of the eight, MIAM's feedback included), encodes the visible ones with
the same :class:`~miam.models.TokenModel` and predicts the hidden inputs
(:mod:`miam.models.reconstruction`). The trainer, checkpoints, CSV logs, progress lines, seeding and
resume from ``last.ckpt`` are :func:`miam.training.run.make_trainer`'s, as for ``miam train``.

**MIAM's unimodal score in pretraining.** Validation scores M + 1 views of each batch. View ``m``
shows modality (group) m alone and hides every other present token; its score is the skill (an R^2:
1 - error / error of the training mean, cross-entropy / uniform guess for categorical levels) of
reconstructing the *other* modalities from m alone. It plays the role of the supervised unimodal
score: a modality that alone explains much of the rest is the one the encoder can lean on, so
rho_s > 1 and MIAM hides it more often, leaving steps where the others must be read; a score that
still climbs fast (rho_d > 1) is not settled and is hidden less. View ``masked`` hides a fixed random
half of the tokens (the same draw every epoch); ``val/selection``, the checkpoint and early-stopping
monitor, is the mean of all views. ``val/error_masked`` and ``val/baseline_masked`` are the
masked view's standardised squared error and that of predicting each token's training mean.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from miam.config import MaskingConfig, RunConfig, check_masking_units, resolve_auto, save_config
from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import ConfigError
from miam.models.reconstruction import ReconstructionErrors, ReconstructionHeads, reconstruction_errors
from miam.training.data import MultimodalDataModule
from miam.training.module import MiamModule, step_seed

#: the placeholder task of a pretraining module (its task head is never trained nor carried over)
PRETRAIN_TASK = TaskSpec("multilabel", 1, ("none",))
#: the view that hides a fixed random half of the tokens
MASKED_VIEW = "masked"
#: the random stream of the masked view's draw, fixed across epochs
MASKED_STREAM = 30_000
FINETUNE_MODES = ("full", "linear_probe")
#: the kinds of ``pretrain.source`` (:func:`build_pool`)
SOURCE_KINDS = ("dataset", "files", "grid")
#: the encoder settings a fine-tuned model takes from its pretraining checkpoint
ENCODER_KEYS = ("d_model", "depth", "heads", "hidden", "mask_token", "readd_position", "pooling",
                "tabular_embedding", "n_frequencies", "sigma")
#: standardisation statistics are read from at most this many training sites
STATS_SITES = 20_000


class PretrainModule(MiamModule):
    """Masked reconstruction of hidden tokens with a masking strategy; see the module docstring.

    Args:
        specs: as :class:`MiamModule`.
        model: as :class:`MiamModule` (``model.architecture`` must be ``token``).
        masking: as :class:`MiamModule`; its ``score_baseline`` and ``noise_floor`` are 0 here: a
            skill's chance level is 0, and it has no standard error.
        optim: as :class:`MiamModule`.
        groups: as :class:`MiamModule`.
        seed: as :class:`MiamModule`.
        source: what the unlabelled sites were (kept in the checkpoint; a fine-tuned model's report says it).
    """

    def __init__(self, specs: Sequence[Mapping[str, Any]], model: Mapping[str, Any] | None = None,
                 masking: Mapping[str, Any] | None = None, optim: Mapping[str, Any] | None = None,
                 groups: Mapping[str, Sequence[str]] | None = None, seed: int = 0, source: str = "") -> None:
        if (model or {}).get("architecture", "token") != "token":
            raise ConfigError(f"Pretraining reconstructs tokens with the token model: set model.architecture: token "
                              f"(got {model['architecture']!r}).")
        masking = {**(masking or {}), "score_baseline": 0.0, "noise_floor": 0.0}
        super().__init__(specs, PRETRAIN_TASK.to_dict(), model, masking, optim, groups, seed=seed)
        self.save_hyperparameters()
        self.heads = ReconstructionHeads(self.specs, self.model.cls.shape[-1])
        self._sums: Tensor | None = None
        self.reconstruction_: dict[str, float] = {}

    @property
    def view_names(self) -> list[str]:
        return [*self.group_names, MASKED_VIEW]

    def errors(self, batch: MultimodalBatch, visible: Tensor) -> ReconstructionErrors:
        """:class:`~miam.models.reconstruction.ReconstructionErrors` of the hidden present tokens under ``visible``."""
        predictions = self.heads(self.model.token_states(batch, visible))
        return reconstruction_errors(self.heads, predictions, batch, ~visible)

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> Tensor:
        if batch_idx == 0:
            batch.validate(self.specs)
        visible = self.draw_visible(batch)
        errors = self.errors(batch, visible)
        loss = errors.loss()
        b = batch.batch_size
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log("train/visible", visible.float().mean(), batch_size=b)
        return loss

    def view_visible(self, batch: MultimodalBatch, batch_idx: int) -> Tensor:
        """Visible masks [V, B, T] of the validation views: each group alone, then the fixed random half."""
        b, t = batch.batch_size, self.token_group.numel()
        alone = (self.view_masks[:-1].unsqueeze(1)).expand(-1, b, t)
        g = torch.Generator(device=self.device).manual_seed(step_seed(self.seed, batch_idx, MASKED_STREAM))
        half = torch.rand(b, t, generator=g, device=self.device) < 0.5
        return torch.cat([alone, half.unsqueeze(0)])

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        sums = []
        for visible in self.view_visible(batch, batch_idx):
            e = self.errors(batch, visible)
            sums.append(torch.stack([e.error, e.baseline, e.count]))
        sums = torch.stack(sums).double()                             # [V, 3, M]
        self._sums = sums if self._sums is None else self._sums + sums

    def view_scores(self, stage: str) -> dict[str, float]:
        """Each view's skill, the mean over the modalities it hides (summed across ranks), then reset."""
        sums = self._sums
        self._sums = None
        if sums is None:
            return {}
        if self._trainer is not None and self._trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        error, baseline, count = sums.unbind(1)
        skill = ReconstructionErrors(self.model.modalities, error, baseline, count).skill()   # [V, M]
        scores = {name: float(row[~row.isnan()].mean()) for name, row in zip(self.view_names, skill)}
        self.val_scores_, self.val_standard_errors_ = dict(scores), {}
        masked = count[-1] > 0
        self.reconstruction_ = {"error": float((error[-1][masked] / count[-1][masked]).mean()),
                                "baseline": float((baseline[-1][masked] / count[-1][masked]).mean())}
        return scores

    def log_scores(self, stage: str, scores: Mapping[str, float]) -> None:
        super().log_scores(stage, scores)
        for key, value in self.reconstruction_.items():
            self.log(f"{stage}/{key}_{MASKED_VIEW}", value, sync_dist=False)


# ---- fine-tuning ----------------------------------------------------------------------


def read_pretrained(path: str | Path) -> dict[str, Any]:
    """A checkpoint's hyperparameters and weights (``{"hparams", "state_dict"}``); a missing file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrain.init_from: checkpoint {str(path)!r} does not exist.")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return {"hparams": ckpt.get("hyper_parameters", {}), "state_dict": ckpt["state_dict"], "epoch": ckpt.get("epoch")}


def check_finetune(mode: str) -> None:
    """Raise a ConfigError unless ``mode`` is one of :data:`FINETUNE_MODES`."""
    if mode not in FINETUNE_MODES:
        raise ConfigError(f"pretrain.finetune must be one of {list(FINETUNE_MODES)}, got {mode!r}.")


def finetune_config(cfg: RunConfig) -> tuple[RunConfig, str]:
    """``cfg`` with the encoder settings (:data:`ENCODER_KEYS`) of its ``pretrain.init_from`` checkpoint, and a
    line naming those that changed (the pretrained weights fix them)."""
    if not cfg.pretrain.init_from:
        return cfg, ""
    check_finetune(cfg.pretrain.finetune)
    model = read_pretrained(cfg.pretrain.init_from)["hparams"].get("model") or {}
    taken = {k: model[k] for k in ENCODER_KEYS if k in model}
    changed = {k: v for k, v in taken.items() if getattr(cfg.model, k) != v}
    line = ("" if not changed else "encoder settings of the pretrained checkpoint: "
            + ", ".join(f"model.{k} {v}" for k, v in changed.items()))
    return cfg.replace(model=taken), line


def init_from_pretrained(module: MiamModule, path: str | Path, finetune: str = "full") -> dict[str, Any]:
    """Load a pretraining checkpoint's tokenizers, embeddings and encoder into ``module.model`` (the task head
    starts afresh); ``linear_probe`` then freezes everything but the head. Returns the record kept in
    ``module.hparams["pretrained"]`` (and so in every checkpoint of the fine-tuned model).

    Raises:
        ConfigError: the checkpoint was made on other modalities or token counts (named), or is missing.
    """
    from miam.data.contract.spec import spec_difference

    check_finetune(finetune)
    ckpt = read_pretrained(path)
    hp = ckpt["hparams"]
    specs = [ModalitySpec.from_dict(s) for s in hp.get("specs", [])]
    problem = spec_difference(specs, module.specs, "in the checkpoint", "in the data")
    if problem:
        raise ConfigError(f"pretrain.init_from: {Path(path).name} was pretrained on other inputs than this dataset's "
                          f"({problem}); pretrain on this dataset's modalities (miam pretrain with the same data "
                          f"section) or fine-tune without --init-from.")
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()
             if k.startswith("model.") and not k.startswith("model.head.")}
    result = module.model.load_state_dict(state, strict=False)
    stray = [k for k in result.missing_keys if not k.startswith("head.")] + list(result.unexpected_keys)
    if stray:
        raise ConfigError(f"pretrain.init_from: {Path(path).name} does not fit this model (differing weights "
                          f"{stray[:5]}); check model.architecture.")
    if finetune == "linear_probe":
        for name, p in module.model.named_parameters():
            p.requires_grad_(name.startswith("head."))
    record = {"checkpoint": Path(path).name, "source": hp.get("source", ""),
              "strategy": (hp.get("masking") or {}).get("strategy", ""), "epoch": ckpt["epoch"], "finetune": finetune}
    module.hparams["pretrained"] = record
    return record


def describe_pretrained(record: Mapping[str, Any] | None) -> str:
    """One line for reports: what a fine-tuned model was pretrained on ("" when it was not).

    Example:
        >>> describe_pretrained({"checkpoint": "best.ckpt", "source": "20000 unlabelled sites", "strategy": "miam",
        ...                      "epoch": 9, "finetune": "full"})
        'Pretrained (masking: miam, 10 epochs, best.ckpt) on 20000 unlabelled sites; fine-tuned: full.'
    """
    if not record:
        return ""
    n = None if record.get("epoch") is None else int(record["epoch"]) + 1
    epochs = "" if n is None else f", {n} epoch{'s' if n != 1 else ''}"
    return (f"Pretrained (masking: {record.get('strategy')}{epochs}, {record.get('checkpoint')}) on "
            f"{record.get('source')}; fine-tuned: {record.get('finetune')}.")


# ---- the pretraining run ------------------------------------------------------------------


def build_pool(cfg: RunConfig, dataset: Any) -> Any:
    """The unlabelled source ``cfg.pretrain.source`` names (the contract: :mod:`miam.data.contract.unlabelled`)."""
    from miam.data.contract.unlabelled import concat, from_dataset
    from miam.data.files.grid import Grid
    from miam.data.files.pools import GridPool, sites_pool

    p = cfg.pretrain
    src = dict(p.source or {})
    kind = src.pop("kind", "dataset")
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"pretrain.source.kind must be one of {list(SOURCE_KINDS)}, got {kind!r}.")
    seed = cfg.trainer.seed
    labelled = from_dataset(dataset, val_fraction=p.val_fraction, seed=seed,
                          source=f"{len(dataset.split('train'))} labelled training sites (inputs only)")
    if kind == "dataset":
        extra = dataset.info.get("unlabelled")
        return labelled if extra is None else concat([extra, labelled], p.val_fraction, seed)
    data = dataset.info.get("files")
    if data is None:
        raise ConfigError(f"pretrain.source.kind {kind!r} reads new sites with a 'files' dataset's encoders; data.name "
                          f"is {cfg.data.name!r}: use pretrain.source: {{kind: dataset}}.")
    if kind == "files":
        if "sites" not in src:
            raise ConfigError("pretrain.source: kind files needs 'sites' (a table of unlabelled sites with the "
                              "training sites table's id and coordinate columns).")
        pool = sites_pool(data, src["sites"], src.get("sources"), p.val_fraction, seed)
        return concat([pool, labelled], p.val_fraction, seed) if p.include_labelled else pool
    if "raster" in src:
        grid = Grid.of_raster(Path(data.root) / src["raster"])
    elif "bbox" in src:
        grid = Grid.of_bbox(src["bbox"], float(src["resolution"]), src.get("crs", data.crs))
    else:
        raise ConfigError("pretrain.source: kind grid needs 'raster' (a GeoTIFF whose grid to read) or 'bbox' and "
                          "'resolution'.")
    return GridPool(data, grid, src.get("sample"), p.val_fraction, seed, src.get("window_pixels", 1 << 16),
                      src.get("sources"))


def sample_batches(split: Any, batch_size: int, limit: int, seed: int) -> Iterator[MultimodalBatch]:
    """Batches of at most ``limit`` sites of ``split`` drawn at random (all when fewer)."""
    n = len(split)
    rows = np.arange(n) if n <= limit else np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    for a in range(0, len(rows), batch_size):
        yield split.__getitems__(rows[a:a + batch_size])


@dataclass
class PretrainResult:
    """What a pretraining run leaves: the best module, its files and the reconstruction it reached."""

    module: PretrainModule
    pool: Any
    out_dir: Path
    best_checkpoint: str
    last_checkpoint: str
    seconds: float
    epochs: int
    #: on the validation sites, the masked view: standardised squared error, and the training mean's
    reconstruction: dict[str, float]


def pretraining_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the pretraining section's epochs and masking in the trainer and masking sections."""
    p = cfg.pretrain
    return cfg.replace(trainer={"max_epochs": p.max_epochs or cfg.trainer.max_epochs},
                       masking=vars(cfg.masking) if p.masking is None else {**vars(MaskingConfig()), **p.masking})


def pretrain(cfg: RunConfig, dataset: Any = None, pool: Any = None, resume: bool = False,
             extra_callbacks: list | None = None) -> PretrainResult:
    """Pretrain as ``cfg`` says (:func:`pretraining_config`); ``resume`` continues from ``out_dir/checkpoints/last.ckpt``.

    ``dataset``: the labelled dataset (default: built from ``cfg.data``), whose specs, training inputs and
    statistics the pretraining uses; ``pool``: the unlabelled source (default: :func:`build_pool`).
    """
    from miam.data.registry import build_dataset
    from miam.training.run import make_trainer, quiet_lightning

    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    cfg = pretraining_config(cfg)
    dataset = dataset if dataset is not None else build_dataset(cfg.data.name, **cfg.data.params)
    pool = pool if pool is not None else build_pool(cfg, dataset)
    check_masking_units(cfg.masking, list(cfg.data.groups or pool.modalities), "pretraining")
    cfg, chosen = resolve_auto(cfg, len(pool.split("train")), sum(s.n_tokens for s in pool.specs))
    if chosen:
        print(chosen, flush=True)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    model = {k: v for k, v in vars(cfg.model).items() if k not in ("weighted_loss", "fusion")}
    module = PretrainModule([s.to_dict() for s in pool.specs], model, vars(cfg.masking), vars(cfg.optim),
                            cfg.data.groups, cfg.trainer.seed, str(pool.info.get("source", "")))
    module.heads.standardizer.fit(sample_batches(pool.split("train"), cfg.data.eval_batch_size, STATS_SITES,
                                                 cfg.trainer.seed))
    data = MultimodalDataModule(pool, cfg.data.batch_size, cfg.data.eval_batch_size, cfg.data.num_workers,
                                cfg.trainer.seed)
    last = out / "checkpoints" / "last.ckpt"
    start = time.perf_counter()
    with quiet_lightning():
        trainer = make_trainer(cfg, out, extra_callbacks)
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume and last.is_file() else None)
    seconds = time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path or str(last)
    best_module = PretrainModule.load_from_checkpoint(best, map_location="cpu") if Path(best).is_file() else module
    best_module.trajectory_ = list(module.trajectory_)
    return PretrainResult(best_module, pool, out, best, str(last), seconds, trainer.current_epoch,
                          reconstruction(best_module, pool.split("val"), cfg.data.eval_batch_size))


@torch.no_grad()
def reconstruction(module: PretrainModule, split: Any, batch_size: int = 512) -> dict[str, float]:
    """The validation views' skills and the masked view's error beside the training mean's, on ``split``."""
    module = module.eval()
    for i, batch in enumerate(sample_batches(split, batch_size, len(split), 0)):
        module.validation_step(batch.to(module.device), i)
    scores = module.view_scores("val")
    return {**{f"skill_{k}": v for k, v in scores.items()}, **module.reconstruction_}
