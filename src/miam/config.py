"""Run configuration: YAML sections with a default for every option.

A config file names only what differs from the defaults::

    data:
      name: synthetic
      params: {n_sites: 3000, missing: {satellite: 0.1}}
    masking:
      strategy: miam
      params: {kappa: 10, lambda_s: 1, lambda_d: 1}
    trainer:
      max_epochs: 30

Unknown sections or keys are errors that list the valid ones.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from miam._validation import check_keys
from miam.balance.tracker import ImbalanceTracker
from miam.errors import ConfigError

logger = logging.getLogger("miam.config")


@dataclass
class DataConfig:
    #: dataset name in :mod:`miam.data.registry` (``synthetic``, ...)
    name: str = "synthetic"
    #: keyword arguments of the dataset's builder
    params: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 128
    eval_batch_size: int = 512
    num_workers: int = 0
    #: several data modalities forming one modality for masking and feedback: {group: [modalities]}
    groups: dict[str, list[str]] | None = None


@dataclass
class ModelConfig:
    #: ``token`` (one transformer over all tokens) or ``late_fusion`` (an encoder and a head per modality)
    architecture: str = "token"
    #: encoder width, depth and heads; ``auto`` chooses them from the training data (:func:`resolve_auto`)
    d_model: int | str = "auto"
    depth: int | str = "auto"
    heads: int | str = "auto"
    dropout: float = 0.1
    #: ``replace`` (learned mask token, the paper's way) or ``drop`` (key-padding, packed)
    hidden: str = "replace"
    mask_token: str = "shared"
    readd_position: bool = False
    #: ``replace`` only: ``eval`` (collapse hidden tokens where exact, in eval mode), ``always`` (also in training; needs dropout 0) or ``never``
    collapse_hidden: str = "eval"
    pooling: str = "mean"
    tabular_embedding: str = "periodic"
    n_frequencies: int = 48
    sigma: float = 0.01
    #: the "full weighted loss" for multilabel tasks (False: plain BCE)
    weighted_loss: bool = True
    #: late_fusion only: ``sum``, ``mean``, ``concat`` or ``entropy`` (None: ``sum``, or what ``balance`` needs)
    fusion: str | None = None


#: the feedback tracker's defaults, which the masking section's tracker options take
_TRACKER = ImbalanceTracker.defaults()


@dataclass
class MaskingConfig:
    #: one of :func:`miam.masking.list_strategies`
    strategy: str = "miam"
    #: the strategy's parameters (``q``, ``kappa``, ``priority``, ``lambda_s``, ``lambda_d``, ...)
    params: dict[str, Any] = field(default_factory=dict)
    #: one p per sample instead of one per step
    per_sample: bool = False
    #: tracker options for feedback-driven strategies (:class:`miam.balance.ImbalanceTracker`,
    #: whose signature holds the defaults)
    eps: float = _TRACKER["eps"]
    window: int = _TRACKER["window"]
    clamp: list[float] | None = _TRACKER["clamp"]
    #: subtracted from each unimodal score before rho_s: a number, or ``chance`` (the metric's:
    #: AUROC 0.5, top-1 1/C); ours, 0 = the paper
    score_baseline: float | str = _TRACKER["baseline"]
    #: how rho_d reads a score's speed: ``diff`` (mean |one-epoch change| over ``window``, the paper)
    #: or ``slope`` (|least-squares slope| over ``window`` + 1 epochs); ours
    derivative: str = _TRACKER["derivative"]
    #: z > 0: a score change within z standard errors of the validation score's own noise counts as
    #: that noise (d_m floored); 0 = the paper; ours
    noise_floor: float = _TRACKER["noise_floor"]


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    #: early stopping patience (epochs) on the mean of unimodal and full validation scores;
    #: ``auto``: about :data:`AUTO_PATIENCE_STEPS` optimiser steps, within 10 to 30 epochs
    patience: int | str = "auto"
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    progress_bar: bool = True
    log_every_n_steps: int = 10
    #: ``csv`` or ``tensorboard`` (needs the tensorboard extra)
    logger: str = "csv"
    limit_train_batches: float = 1.0


@dataclass
class BalanceConfig:
    #: a balancing method of the related work (:func:`miam.balance.list_methods`), or None;
    #: ``balance: ogm_ge`` is short for ``balance: {method: ogm_ge}``. It needs
    #: ``model.architecture: late_fusion`` (M-SAM also runs on ``token``); the masking strategy
    #: still applies, so set ``masking: {strategy: constant, params: {q: 0}}`` to run it alone
    method: str | None = None
    #: the method's parameters (``alpha``, ``tau``, ...)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationConfig:
    #: named input configurations (the paper's partial inputs), each
    #: ``{name: str, tokens: {modality or group: "all" | [token names or fnmatch globs]}}``; modalities
    #: not listed are hidden. Their plain mean is ``avg_paper_configs``
    #: (:func:`miam.evaluation.configs.resolve_configs`)
    configs: list[dict[str, Any]] = field(default_factory=list)
    #: multilabel only: also report the samples-averaged F1 of each sample's top-k predicted species
    #: (GeoLifeCLEF 2024's score; GeoPlant's baselines use k = 25)
    top_k_f1: int | None = None


@dataclass
class PretrainConfig:
    """Masked self-supervised pretraining (``miam pretrain``) and fine-tuning from it (``miam train``);
    docs/pretraining.md."""

    #: the unlabelled sites: ``{kind: dataset}`` (the data section's dataset: its training sites' inputs and
    #: its unlabelled pool, if it has one), ``{kind: files, sites: TABLE, sources: {...}}`` or ``{kind: grid,
    #: raster: FILE (or bbox: [...], resolution: R, crs: ...), sample: N, window_pixels: W}`` (``files`` data)
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "dataset"})
    #: a files source: add the labelled training sites' inputs (never their labels) to the pool (a grid
    #: source reads raster cells only; a dataset source always holds them)
    include_labelled: bool = True
    #: pretraining epochs (None: trainer.max_epochs)
    max_epochs: int | None = None
    #: the pretraining masking, as the masking section (None: the masking section)
    masking: dict[str, Any] | None = None
    #: share of the unlabelled sites held out to score reconstruction (checkpoint selection, MIAM's feedback)
    val_fraction: float = 0.1
    #: ``miam train``: start from this pretraining checkpoint (``--init-from``)
    init_from: str | None = None
    #: ``full`` (every weight trains) or ``linear_probe`` (tokenizers and encoder frozen, the head trains)
    finetune: str = "full"


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    #: output folder: checkpoints, logs, reports
    out_dir: str = "miam_runs/run"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **sections: Mapping[str, Any]) -> RunConfig:
        """A copy with some keys of some sections changed, e.g. ``masking={"strategy": "dropout"}``."""
        d = self.to_dict()
        for sec, values in sections.items():
            if isinstance(values, Mapping):
                d[sec] = {**d[sec], **values}
            else:
                d[sec] = values
        return from_dict(d)


#: ``auto`` model sizes: (most training token values, d_model, depth, heads), the first row whose bound
#: ``training sites x tokens per site`` stays under (benchmarks/defaults.py measures the choice)
AUTO_SIZES = ((200_000, 64, 2, 4), (5_000_000, 128, 2, 4), (math.inf, 192, 3, 8))
#: ``auto`` patience: epochs holding about this many optimiser steps, clipped to [10, 30]
AUTO_PATIENCE_STEPS = 200
#: the keys that take ``auto``
AUTO_KEYS = {"model": ("d_model", "depth", "heads"), "trainer": ("patience",)}


def resolve_auto(cfg: RunConfig, n_train: int, n_tokens: int) -> tuple[RunConfig, str]:
    """``cfg`` with each ``auto`` replaced by a value chosen from the data, and a line saying what and why.

    Small data gets a small model (fewer parameters to fit, and faster), and a patience that
    counts optimiser steps rather than epochs: with a few hundred sites an epoch is one or
    two steps, and ten epochs are too few to tell a plateau from noise.

    Examples:
        >>> cfg, line = resolve_auto(RunConfig(), n_train=210, n_tokens=44)
        >>> cfg.model.d_model, cfg.model.depth, cfg.model.heads, cfg.trainer.patience
        (64, 2, 4, 30)
    """
    chosen = {}
    _, d_model, depth, heads = next(row for row in AUTO_SIZES if n_train * n_tokens < row[0])
    if cfg.model.d_model == "auto":
        chosen["model.d_model"] = d_model
    if cfg.model.depth == "auto":
        chosen["model.depth"] = depth
    if cfg.model.heads == "auto":   # a divisor of the width
        width = chosen.get("model.d_model", cfg.model.d_model)
        chosen["model.heads"] = max(h for h in range(1, heads + 1) if width % h == 0)
    if cfg.trainer.patience == "auto":
        steps = max(1, math.ceil(n_train / cfg.data.batch_size))
        chosen["trainer.patience"] = min(30, max(10, math.ceil(AUTO_PATIENCE_STEPS / steps)))
    if not chosen:
        return cfg, ""
    model = {k.split(".")[1]: v for k, v in chosen.items() if k.startswith("model.")}
    trainer = {k.split(".")[1]: v for k, v in chosen.items() if k.startswith("trainer.")}
    line = (f"auto settings for {n_train} training sites x {n_tokens} tokens: "
            + ", ".join(f"{k} {v}" for k, v in chosen.items()) + " (set them in the config to override)")
    return cfg.replace(model=model, trainer=trainer), line


_SECTIONS = {f.name: f.type for f in fields(RunConfig)}
_SECTION_CLASSES = {"data": DataConfig, "model": ModelConfig, "masking": MaskingConfig,
                    "optim": OptimConfig, "trainer": TrainerConfig, "balance": BalanceConfig,
                    "evaluation": EvaluationConfig, "pretrain": PretrainConfig}


def from_dict(d: Mapping[str, Any], source: str = "config") -> RunConfig:
    """Build a :class:`RunConfig`, rejecting unknown sections and keys by name."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(d).__name__}.")
    check_keys(source, d, list(_SECTIONS), what="section")
    kwargs: dict[str, Any] = {}
    for name, cls in _SECTION_CLASSES.items():
        values = d.get(name) or {}
        if name == "balance" and isinstance(values, str):
            values = {"method": values}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got {values!r}.")
        check_keys(source, values, [f.name for f in fields(cls)], context=f" in section {name!r}")
        for key in AUTO_KEYS.get(name, ()):
            value = values.get(key, "auto")
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{source}: {name}.{key} must be a positive integer or 'auto', got {value!r}.")
        kwargs[name] = cls(**copy.deepcopy(dict(values)))
    if kwargs["balance"].method is not None:
        from miam.balance.methods import method_class

        method_class(kwargs["balance"].method).check_params(kwargs["balance"].params)
    if "out_dir" in d:
        kwargs["out_dir"] = str(d["out_dir"])
    if kwargs["data"].groups:
        check_masking_units(kwargs["masking"], list(kwargs["data"].groups), f"{source}: data.groups")
    return RunConfig(**kwargs)


def check_masking_units(masking: MaskingConfig, units: Sequence[str], where: str) -> None:
    """Raise when the strategy balances modalities against each other and ``units`` holds fewer than it needs.

    Called with ``data.groups`` at config time, else with the dataset's modalities once read.

    Raises:
        ConfigError: naming the units and the strategies that train a single modality.
    """
    from miam.masking.strategies import strategy_class

    need = strategy_class(masking.strategy).min_modalities
    if len(units) < need:
        raise ConfigError(
            f"{where}: masking.strategy {masking.strategy!r} balances modalities against each other and needs at "
            f"least {need} modalities, got {len(units)}: {list(units)}. With one modality, mask it with "
            f"masking: {{strategy: dropout, params: {{q: 0.1}}}} (the whole modality hidden in 10% of the steps) "
            f"or {{strategy: constant, params: {{q: 0.5}}}} (half of its tokens hidden), or add a second table or "
            f"raster (docs/own_data.md, 'One table').")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"trainer.max_epochs=5"`` -> (["trainer", "max_epochs"], 5); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like section.key=value.")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config (or the defaults) and apply ``section.key=value`` overrides."""
    d: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {str(path)!r} does not exist.")
        source = str(path)
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML ({e}).") from e
    d = from_dict(d, source).to_dict()
    parsed = [(text, *parse_override(text)) for text in overrides]
    for text, keys, value in parsed:
        node = d
        for k in keys[:-1]:
            if not isinstance(node, dict) or k not in node:
                raise ConfigError(f"Override {text!r}: unknown key {k!r}; valid keys are {list(node)}.")
            node = node[k] if node[k] is not None else node.setdefault(k, {})
        if keys[0] not in ("out_dir",) and len(keys) == 2 and keys[-1] not in node:
            raise ConfigError(f"Override {text!r}: unknown key {keys[-1]!r}; valid keys are {list(node)}.")
        node[keys[-1]] = value
    changed = [keys[:2] for _, keys, _ in parsed]
    if ["masking", "strategy"] in changed and ["masking", "params"] not in changed:
        keep_strategy_params(d["masking"])
    return from_dict(d, source)


def keep_strategy_params(masking: dict[str, Any]) -> None:
    """Drop the parameters that ``masking["strategy"]`` does not take, with one log line naming them.

    A strategy switched from the command line (``--set masking.strategy=dropout``) on a config
    written for another (MIAM's ``kappa``, ``lambda_s``...) keeps only what applies to it.
    """
    from miam.masking.strategies import strategy_class

    valid = strategy_class(masking["strategy"]).param_names()
    params = masking.get("params") or {}
    dropped = [k for k in params if k not in valid]
    if dropped:
        masking["params"] = {k: v for k, v in params.items() if k in valid}
        logger.info("masking.strategy=%s: dropped the parameter(s) %s it does not take (it takes %s).",
                    masking["strategy"], dropped, sorted(valid))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
