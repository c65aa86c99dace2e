"""Named input configurations: the paper's partial inputs as token masks.

The paper's "Avg." on GeoPlant is not the mean over modality subsets: it is the plain
mean over 12 named configurations, five of them *partial* (BIO1 only, the 2018 climate
year, the satellite centre patch, ...). A dataset config lists them under
``evaluation.configs``::

    evaluation:
      configs:
        - name: BIO1 only
          tokens: {env: [bio1]}               # token names or fnmatch globs
        - name: Clim 2018
          tokens: {climate: ["2018-*"]}
        - name: all
          tokens: {env: all, climate: all, satellite: all}

A key is a data modality or a group of ``data.groups`` (all its modalities); a value is
``"all"`` or a list of token names / globs. Modalities a configuration does not list are
hidden. :func:`resolve_configs` turns the list into token masks [T] (in the model's token
order) and names every mistake with the valid choices.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from miam.data.contract.spec import ModalitySpec
from miam.errors import ConfigError

#: how many valid token names an error lists before it says "and N more"
_SHOWN = 24


@dataclass(frozen=True)
class InputConfig:
    """One named configuration: its name and the token mask [T] it leaves visible."""

    name: str
    mask: Tensor

    @property
    def n_visible(self) -> int:
        return int(self.mask.sum())


def _listing(names: Sequence[str]) -> str:
    shown = list(names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{shown}{more}"


def _select(names: Sequence[str], value: Any, owner: str, where: str) -> Tensor:
    """Bool [len(names)]: the tokens that ``value`` ("all" or token names / globs) selects."""
    if value == "all":
        return torch.ones(len(names), dtype=torch.bool)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected 'all' or a non-empty list of token names of {owner!r}, got {value!r}.")
    chosen = torch.zeros(len(names), dtype=torch.bool)
    for pattern in value:
        hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(f"{where}: no token of {owner!r} matches {pattern!r}; valid token names are "
                              f"{_listing(names)}.")
        chosen[hits] = True
    return chosen


def resolve_configs(specs: Sequence[ModalitySpec], configs: Sequence[Mapping[str, Any]],
                    groups: Mapping[str, Sequence[str]] | None = None,
                    source: str = "evaluation.configs") -> list[InputConfig]:
    """Token masks for ``evaluation.configs``, in the order of the specs' tokens.

    Args:
        specs: the model's modalities (their order is the token order).
        configs: ``[{"name": ..., "tokens": {modality or group: "all" | [names/globs]}}, ...]``.
        groups: ``data.groups``, so that a group name selects all of its modalities.
        source: where the list came from, for error messages.

    Raises:
        ConfigError: naming the configuration and field for an unknown modality or token,
            or a duplicate or missing name.

    Examples:
        >>> specs = [ModalitySpec("env", "tabular", 2, token_names=["bio1", "bio2"]),
        ...          ModalitySpec("sat", "image", 2, token_shape=(3,), token_names=["r0c0", "r0c1"])]
        >>> [c.mask.tolist() for c in resolve_configs(specs, [{"name": "bio1", "tokens": {"env": ["bio1"]}},
        ...                                                   {"name": "all", "tokens": {"env": "all", "sat": "all"}}])]
        [[True, False, False, False], [True, True, True, True]]
    """
    by_name = {s.name: s for s in specs}
    members = {**{n: [n] for n in by_name}, **{g: list(m) for g, m in (groups or {}).items()}}
    offsets, start = {}, 0
    for s in specs:
        offsets[s.name] = (start, start + s.n_tokens)
        start += s.n_tokens
    if not isinstance(configs, Sequence) or isinstance(configs, str):
        raise ConfigError(f"{source}: expected a list of {{name, tokens}} mappings, got {configs!r}.")
    out: list[InputConfig] = []
    for i, config in enumerate(configs):
        where = f"{source}[{i}]"
        if not isinstance(config, Mapping) or set(config) != {"name", "tokens"}:
            keys = list(config) if isinstance(config, Mapping) else type(config).__name__
            raise ConfigError(f"{where}: expected exactly the keys ['name', 'tokens'], got {keys}.")
        name, tokens = config["name"], config["tokens"]
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name: expected a non-empty string, got {name!r}.")
        where = f"{source}[{i}] ({name!r})"
        if any(c.name == name for c in out):
            raise ConfigError(f"{where}: the name {name!r} is used twice; configuration names must be unique.")
        if not isinstance(tokens, Mapping) or not tokens:
            raise ConfigError(f"{where}.tokens: expected a mapping {{modality: 'all' | [token names]}}, got {tokens!r}.")
        mask = torch.zeros(start, dtype=torch.bool)
        for key, value in tokens.items():
            if key not in members:
                raise ConfigError(f"{where}.tokens: unknown modality {key!r}; valid names are {list(members)}.")
            index = torch.cat([torch.arange(*offsets[m]) for m in members[key]])
            names = [n for m in members[key] for n in by_name[m].token_names]
            mask[index[_select(names, value, key, f"{where}.tokens.{key}")]] = True
        out.append(InputConfig(name, mask))
    return out
