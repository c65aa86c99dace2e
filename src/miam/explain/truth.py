"""Agreement of Shapley values with a known ground truth (the synthetic generator's).

``truth`` is ``dataset.info["truth"]`` of :func:`miam.data.synthetic.generator.make_dataset`:
``{"modality_importance": {m: share}, "token_importance": {m: [T_m] shares}}``. Rank
agreement is Spearman's rho (average ranks for ties); tokens with a true share of zero
are noise, and their values should be near zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from miam.explain.shapley import ShapleyResult


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant.

    Examples:
        >>> round(spearman([1, 2, 3, 4], [10, 20, 30, 25]), 6)
        0.8
    """
    ra = pd.Series(np.asarray(a, dtype=float)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, dtype=float)).rank().to_numpy()
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement_row(level: str, values: np.ndarray, se: np.ndarray, truth: Sequence[float]) -> dict[str, Any]:
    """Rank agreement of ``values`` with ``truth`` over all players and over the signal players."""
    t = np.asarray(truth, dtype=float)
    signal, noise = t > 0, t == 0
    top = float(values[signal].max()) if signal.any() else float("nan")
    noise_abs = float(np.abs(values[noise]).max()) if noise.any() else float("nan")
    return {
        "level": level,
        "n_players": len(t),
        "n_signal": int(signal.sum()),
        "spearman_all": spearman(values, t),
        "spearman_signal": spearman(values[signal], t[signal]) if signal.sum() > 1 else float("nan"),
        "top_player_match": bool(np.argmax(values) == np.argmax(t)),
        "noise_max_abs": noise_abs,
        "noise_max_se": float(se[noise].max()) if noise.any() else float("nan"),
        "noise_vs_top_signal": noise_abs / top if noise.any() and top > 0 else float("nan"),
    }


def truth_agreement(modalities: ShapleyResult | None, tokens: Mapping[str, ShapleyResult],
                    truth: Mapping[str, Any]) -> pd.DataFrame:
    """One row per analysis (``"modalities"`` and each explained modality) that the truth covers.

    Only global results with every player named in the truth are compared.
    """
    rows = []
    imp = truth.get("modality_importance", {})
    if modalities is not None and modalities.value == "global" and all(p in imp for p in modalities.players):
        rows.append(agreement_row("modalities", modalities.values, modalities.se,
                                  [imp[p] for p in modalities.players]))
    token_truth = truth.get("token_importance", {})
    for name, res in tokens.items():
        if res.value != "global" or name not in token_truth or len(token_truth[name]) != len(res.players):
            continue
        rows.append(agreement_row(name, res.values, res.se, token_truth[name]))
    return pd.DataFrame(rows)
