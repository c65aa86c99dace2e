"""``auto`` model size and patience: chosen from the training data, overridable, validated."""

from __future__ import annotations

import pytest

from miam.config import RunConfig, from_dict, load_config, resolve_auto
from miam.errors import ConfigError


@pytest.mark.parametrize("n_train, n_tokens, size", [(210, 44, (64, 2, 4)), (2100, 44, (64, 2, 4)),
                                                     (20_000, 44, (128, 2, 4)), (500_000, 100, (192, 3, 8))])
def test_model_size_grows_with_training_sites_times_tokens(n_train, n_tokens, size):
    cfg, line = resolve_auto(RunConfig(), n_train, n_tokens)
    assert (cfg.model.d_model, cfg.model.depth, cfg.model.heads) == size
    assert f"auto settings for {n_train} training sites x {n_tokens} tokens: model.d_model {size[0]}" in line


def test_patience_counts_optimiser_steps_within_bounds():
    small, _ = resolve_auto(RunConfig(), 210, 44)              # 2 steps an epoch
    mid, _ = resolve_auto(RunConfig(), 2100, 44)               # 17 steps an epoch -> 200 / 17
    large, _ = resolve_auto(RunConfig(), 500_000, 44)
    assert (small.trainer.patience, mid.trainer.patience, large.trainer.patience) == (30, 12, 10)


def test_values_set_in_the_config_are_kept():
    cfg = from_dict({"model": {"d_model": 48}, "trainer": {"patience": 7}})
    out, line = resolve_auto(cfg, 210, 44)
    assert (out.model.d_model, out.model.depth, out.model.heads, out.trainer.patience) == (48, 2, 4, 7)
    out, _ = resolve_auto(from_dict({"model": {"d_model": 30}}), 210, 44)
    assert out.model.heads == 3                                # the largest divisor of 30 up to 4
    fixed = from_dict({"model": {"d_model": 64, "depth": 2, "heads": 4}, "trainer": {"patience": 10}})
    assert resolve_auto(fixed, 210, 44) == (fixed, "")


@pytest.mark.parametrize("text", ["model.d_model=big", "model.depth=0", "trainer.patience=2.5"])
def test_bad_values_name_the_key(text):
    key = text.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key} must be a positive integer or 'auto', got"):
        load_config(None, [text])
