"""Masking strategies (distributions over [0,1]^M) and the token mask they drive."""

from miam.masking.functional import token_mask
from miam.masking.strategies import (
    ALIASES,
    MaskingStrategy,
    expected_mean,
    get_strategy,
    list_strategies,
)

__all__ = ["ALIASES", "MaskingStrategy", "expected_mean", "get_strategy", "list_strategies", "token_mask"]
