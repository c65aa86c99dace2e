"""Scoring a trained model on any subset of its input tokens: every modality subset, the
named input configurations of a dataset's config, their summaries.

Training (checkpoint scores, the best inputs, cross-validation), the explanations (Shapley
values, robustness curves) and the CLI all look down to this package; it imports neither.
"""

from miam.evaluation.configs import InputConfig, resolve_configs
from miam.evaluation.subsets import (
    SubsetEvaluator,
    all_subsets,
    headline,
    headline_columns,
    subset_label,
    summarize_subsets,
    token_groups,
)

__all__ = ["InputConfig", "SubsetEvaluator", "all_subsets", "headline", "headline_columns", "resolve_configs",
           "subset_label", "summarize_subsets", "token_groups"]
