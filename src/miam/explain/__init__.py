"""Explanations of a trained model: any-subset scores, robustness curves, Shapley values, a report.

* :class:`SubsetEvaluator` (:mod:`miam.evaluation`, kept here under its public name): scores
  on many token masks per forward pass.
* :func:`robustness_curves`: the score as a growing share of tokens is hidden.
* :func:`shapley_modalities` (exact, one sweep of all 2^M subsets) and
  :func:`shapley_tokens` (permutation sampling with antithetic pairs, or exact), with
  the captum-like classes :class:`ShapleyModalities` and :class:`ShapleyTokens`.
* :func:`explain_model` runs them all; :func:`write_report` writes the HTML page and CSVs
  (imported on first use: it needs matplotlib).
"""

from typing import Any

from miam.evaluation.subsets import SubsetEvaluator, all_subsets, subset_label, summarize_subsets, token_groups
from miam.explain.pipeline import Explanation, check_model_data, explain_model
from miam.explain.robustness import robustness_curves, summarize_curves
from miam.explain.shapley import ShapleyModalities, ShapleyResult, ShapleyTokens, shapley_modalities, shapley_tokens
from miam.explain.truth import truth_agreement


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from miam.explain.report import write_report

        return write_report
    raise AttributeError(f"module 'miam.explain' has no attribute {name!r}")


__all__ = [
    "Explanation", "ShapleyModalities", "ShapleyResult", "ShapleyTokens", "SubsetEvaluator", "all_subsets",
    "check_model_data", "explain_model", "robustness_curves", "shapley_modalities", "shapley_tokens",
    "subset_label", "summarize_curves", "summarize_subsets", "token_groups", "truth_agreement", "write_report",
]
