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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from miam.errors import ConfigError


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
    d_model: int = 192
    depth: int = 3
    heads: int = 8
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


@dataclass
class MaskingConfig:
    #: one of :func:`miam.masking.list_strategies`
    strategy: str = "miam"
    #: the strategy's parameters (``q``, ``kappa``, ``priority``, ``lambda_s``, ``lambda_d``, ...)
    params: dict[str, Any] = field(default_factory=dict)
    #: one p per sample instead of one per step
    per_sample: bool = False
    #: tracker options for feedback-driven strategies
    eps: float = 1e-3
    window: int = 1
    clamp: list[float] | None = None
    #: subtracted from each unimodal score before rho_s (0.5 = AUROC's chance level; ours, 0 = the paper)
    score_baseline: float = 0.0


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    #: early stopping patience (epochs) on the mean of unimodal and full validation scores
    patience: int = 10
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
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
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


_SECTIONS = {f.name: f.type for f in fields(RunConfig)}
_SECTION_CLASSES = {"data": DataConfig, "model": ModelConfig, "masking": MaskingConfig,
                    "optim": OptimConfig, "trainer": TrainerConfig, "balance": BalanceConfig}


def from_dict(d: Mapping[str, Any], source: str = "config") -> RunConfig:
    """Build a :class:`RunConfig`, rejecting unknown sections and keys by name."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(d).__name__}.")
    unknown = [k for k in d if k not in _SECTIONS]
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; valid sections are {list(_SECTIONS)}.")
    kwargs: dict[str, Any] = {}
    for name, cls in _SECTION_CLASSES.items():
        values = d.get(name) or {}
        if name == "balance" and isinstance(values, str):
            values = {"method": values}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got {values!r}.")
        valid = [f.name for f in fields(cls)]
        bad = [k for k in values if k not in valid]
        if bad:
            raise ConfigError(f"{source}: unknown key(s) {bad} in section {name!r}; valid keys are {valid}.")
        kwargs[name] = cls(**copy.deepcopy(dict(values)))
    if kwargs["balance"].method is not None:
        from miam.balance.methods import method_class

        method_class(kwargs["balance"].method).check_params(kwargs["balance"].params)
    if "out_dir" in d:
        kwargs["out_dir"] = str(d["out_dir"])
    return RunConfig(**kwargs)


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
    for text in overrides:
        keys, value = parse_override(text)
        node = d
        for k in keys[:-1]:
            if not isinstance(node, dict) or k not in node:
                raise ConfigError(f"Override {text!r}: unknown key {k!r}; valid keys are {list(node)}.")
            node = node[k] if node[k] is not None else node.setdefault(k, {})
        if keys[0] not in ("out_dir",) and len(keys) == 2 and keys[-1] not in node:
            raise ConfigError(f"Override {text!r}: unknown key {keys[-1]!r}; valid keys are {list(node)}.")
        node[keys[-1]] = value
    return from_dict(d, source)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
