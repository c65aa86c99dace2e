"""Figures of the explanations (matplotlib ``Figure`` objects, drawn with Agg; no pyplot state).

Each function returns a :class:`matplotlib.figure.Figure`; :func:`figure_png` turns one
into PNG bytes. Error bars and bands are +-1.96 standard errors (95 % intervals).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from miam.data.contract.spec import ModalitySpec
from miam.explain.shapley import ShapleyResult

#: half-width of the plotted intervals, in standard errors
Z95 = 1.96
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def plot_subsets(table: pd.DataFrame, chance: float | None = None) -> Figure:
    """Horizontal bars: the score on every modality subset (``SubsetEvaluator.evaluate`` table)."""
    t = table.sort_values(["n_modalities", "value"], ascending=[True, True]).reset_index(drop=True)
    fig = Figure(figsize=(7.5, 0.45 * len(t) + 1.4), layout="constrained")
    ax = fig.subplots()
    colors = [_COLORS[int(k - 1) % len(_COLORS)] for k in t["n_modalities"].fillna(1)]
    ax.barh(t["subset"], t["value"], color=colors)
    for i, v in enumerate(t["value"]):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    low = min(float(t["value"].min()), chance if chance is not None else np.inf)
    ax.set_xlim(max(0.0, low - 0.05), min(1.0, float(t["value"].max()) + 0.08))
    if chance is not None:
        ax.axvline(chance, color="grey", ls="--", lw=1, label=f"chance {chance:.2f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(str(t["metric"].iloc[0]))
    ax.set_title("Score on every modality subset (colour = number of modalities)")
    return fig


def plot_robustness(summary: pd.DataFrame, chance: float | None = None, metric: str = "score") -> Figure:
    """Score vs share of tokens hidden, one line per scope, band = +-1 sd over repeats."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (scope, part) in enumerate(summary.groupby("scope", sort=False)):
        x = 100 * part["share"].to_numpy()
        y, sd = part["mean"].to_numpy(), part["sd"].to_numpy()
        overall = scope == "overall"
        color = "black" if overall else _COLORS[i % len(_COLORS)]
        label = "all tokens" if overall else f"{scope} tokens (others visible)"
        ax.plot(x, y, marker="o", ms=3, color=color, lw=2.2 if overall else 1.4, label=label)
        ax.fill_between(x, y - sd, y + sd, color=color, alpha=0.15, lw=0)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1)
    ax.set_xlabel("share of tokens hidden at random (%)")
    ax.set_ylabel(metric)
    ax.set_title("Robustness to missing tokens (mean +- sd over repeats)")
    ax.legend(fontsize=8)
    return fig


def plot_modality_shapley(result: ShapleyResult, truth: dict[str, float] | None = None) -> Figure:
    """Bars of the modality Shapley values with 95 % error bars (optionally the true shares, scaled)."""
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(result.players))
    ax.bar(x, result.values, yerr=Z95 * result.se, capsize=4,
           color=[_COLORS[i % len(_COLORS)] for i in x], label="Shapley value")
    _truth_markers(ax, x, result.values, None if truth is None else [truth.get(p, 0.0) for p in result.players])
    ax.set_xticks(x, result.players)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel(f"contribution to {result.metric}")
    gap = float(result.v_all - result.v_none)
    ax.set_title(f"Modality Shapley values (sum = v(all) - v(none) = {gap:.3f})")
    ax.legend(fontsize=8)
    return fig


def plot_token_shapley(result: ShapleyResult, spec: ModalitySpec, truth: Sequence[float] | None = None) -> Figure:
    """Token Shapley values drawn for the modality's kind.

    Image-like modalities with a ``grid`` get a heat map over the patch grid (and the
    true importance beside it when given); time series a curve over segments; every
    other kind bars per variable.
    """
    if spec.grid is not None and len(result.players) == spec.n_tokens:
        return _heatmap(result, spec, truth)
    if spec.kind in ("timeseries", "audio"):
        return _curve(result, truth)
    return _bars(result, truth)


def _title(result: ShapleyResult) -> str:
    return f"{result.modality}: token Shapley values ({result.metric}; other modalities {result.others})"


def _truth_markers(ax, x: np.ndarray, values: np.ndarray, truth: Sequence[float] | None) -> None:
    if truth is None:
        return
    t = np.asarray(truth, dtype=float)
    scale = values.clip(min=0).sum() / t.sum() if t.sum() > 0 else 1.0
    ax.plot(x, t * scale, "D", mfc="none", mec="black", ms=7, label="true importance (scaled)")


def _bars(result: ShapleyResult, truth: Sequence[float] | None) -> Figure:
    n = len(result.players)
    fig = Figure(figsize=(max(6.0, 0.45 * n + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(n)
    ax.bar(x, result.values, yerr=Z95 * result.se, capsize=3, color=_COLORS[0], label="Shapley value")
    _truth_markers(ax, x, result.values, truth)
    ax.set_xticks(x, result.players, rotation=60 if n > 8 else 0, ha="right" if n > 8 else "center")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel(f"contribution to {result.metric}")
    ax.set_title(_title(result), fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _curve(result: ShapleyResult, truth: Sequence[float] | None) -> Figure:
    n = len(result.players)
    fig = Figure(figsize=(max(6.0, 0.45 * n + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(n)
    ax.plot(x, result.values, marker="o", color=_COLORS[1], label="Shapley value")
    ax.fill_between(x, result.values - Z95 * result.se, result.values + Z95 * result.se,
                    color=_COLORS[1], alpha=0.2, lw=0, label="95 % interval")
    _truth_markers(ax, x, result.values, truth)
    ax.set_xticks(x, result.players, rotation=45 if n > 12 else 0)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("segment")
    ax.set_ylabel(f"contribution to {result.metric}")
    ax.set_title(_title(result), fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _heatmap(result: ShapleyResult, spec: ModalitySpec, truth: Sequence[float] | None) -> Figure:
    rows, cols = spec.grid
    panels = 1 if truth is None else 2
    fig = Figure(figsize=(4.6 * panels + 0.8, 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, panels))
    grid = result.values.reshape(rows, cols)
    lim = float(np.abs(grid).max()) or 1.0
    im = axes[0].imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim)
    se = result.se.reshape(rows, cols)
    for r in range(rows):
        for c in range(cols):
            color = "white" if abs(grid[r, c]) > 0.6 * lim else "black"
            axes[0].text(c, r, f"{grid[r, c]:.3f}\n±{Z95 * se[r, c]:.3f}", ha="center", va="center", fontsize=7,
                         color=color)
    axes[0].set_title(f"{result.modality}: patch Shapley values", fontsize=10)
    fig.colorbar(im, ax=axes[0], shrink=0.8, label=result.metric)
    if truth is not None:
        im2 = axes[1].imshow(np.asarray(truth, dtype=float).reshape(rows, cols), cmap="Greys")
        axes[1].set_title("true importance (generator)", fontsize=10)
        fig.colorbar(im2, ax=axes[1], shrink=0.8)
    for ax in axes:
        ax.set_xticks(range(cols))
        ax.set_yticks(range(rows))
        ax.set_xlabel("patch column")
        ax.set_ylabel("patch row")
    return fig
