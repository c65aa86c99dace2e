"""The explanation report: one self-contained HTML page (plots embedded as PNG) plus CSV files.

Files written to ``out_dir``::

    report.html               every plot and table, opens offline in any browser
    subsets.csv               score on every non-empty modality subset
    robustness.csv            score per scope, share hidden and repeat
    robustness_summary.csv    mean / sd / min / max over repeats
    shapley_modalities.csv    exact modality Shapley values and bootstrap SEs
    shapley_tokens.csv        token Shapley values and SEs, every explained modality
    truth_agreement.csv       rank agreement with the ground truth (when the data has one)
    figures/*.png             every plot of the page as its own PNG, for a paper or a slide
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from miam.explain.pipeline import Explanation
from miam.explain.plots import (
    figure_png,
    plot_modality_shapley,
    plot_robustness,
    plot_subsets,
    plot_token_shapley,
)
from miam.explain.robustness import area_under_curves
from miam.evaluation.subsets import headline

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: .4em 0; }
.note { color: #555; font-size: .9em; } code { background: #f5f5f5; padding: 0 .2em; }
"""


def _img(fig, alt: str, file: Path) -> str:
    """The figure embedded in the page, and saved as ``file`` beside it."""
    png = figure_png(fig)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(png)
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    return df.to_html(index=False, float_format=floatfmt.format, border=0, na_rep="")


def _p(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>'


def token_table(expl: Explanation) -> pd.DataFrame:
    """Every explained modality's token values in one table (with the true share when known)."""
    frames = []
    truth = (expl.truth or {}).get("token_importance", {})
    for name, res in expl.tokens.items():
        df = res.to_frame()
        df["others"] = res.others
        if name in truth and len(truth[name]) == len(df):
            df["true_share"] = truth[name]
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_report(expl: Explanation, out_dir: str | Path, title: str = "miam explanation report") -> Path:
    """Write ``report.html`` and the CSV files to ``out_dir``; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric, chance = expl.metric, expl.chance()
    truth = expl.truth or {}
    expl.subsets.to_csv(out / "subsets.csv", index=False)
    expl.curves.to_csv(out / "robustness.csv", index=False)
    expl.curves_summary.to_csv(out / "robustness_summary.csv", index=False)
    expl.modalities.to_frame().to_csv(out / "shapley_modalities.csv", index=False)
    tokens = token_table(expl)
    tokens.to_csv(out / "shapley_tokens.csv", index=False)
    if expl.agreement is not None and len(expl.agreement):
        expl.agreement.to_csv(out / "truth_agreement.csv", index=False)

    s = expl.summary
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if expl.description:
        parts.append(_p(expl.description, "lead"))
    parts.append(_p(f"{expl.n_samples} held-out samples; metric: {metric}; modalities: "
                    f"{', '.join(expl.group_names)}. Scores: {headline(s)}.", "lead"))

    subsets = expl.subsets[expl.subsets["kind"] == "subset"]
    configs = expl.subsets[expl.subsets["kind"] == "config"]
    parts.append("<h2>1. Score on every modality subset</h2>")
    figures = out / "figures"
    parts.append(_img(plot_subsets(subsets, chance), "subset scores", figures / "subsets.png"))
    parts.append(_table(subsets[["subset", "n_modalities", "n_tokens", "metric", "value", "n"]]))
    if len(configs):
        parts.append(_p(f"The {len(configs)} named input configurations of the dataset's config "
                        f"(evaluation.configs); their plain mean is avg_paper_configs "
                        f"{s['avg_paper_configs']:.4f}."))
        parts.append(_table(configs[["subset", "n_modalities", "n_tokens", "metric", "value", "n"]]
                            .rename(columns={"subset": "configuration"})))

    parts.append("<h2>2. Robustness to missing tokens</h2>")
    parts.append(_img(plot_robustness(expl.curves_summary, chance, metric), "robustness curves",
                      figures / "robustness.png"))
    auc = pd.DataFrame([{"scope": k, f"mean {metric} over shares 0-100 %": v}
                        for k, v in area_under_curves(expl.curves_summary).items()])
    parts.append(_table(auc))
    parts.append(_p("Each sample gets its own random set of hidden tokens (exactly the share of the scope's "
                    "tokens); missing data stays hidden; bands are +-1 sd over repeats."))

    m = expl.modalities
    parts.append("<h2>3. Shapley values of the modalities</h2>")
    parts.append(_img(plot_modality_shapley(m, truth.get("modality_importance")), "modality Shapley values",
                      figures / "shapley_modalities.png"))
    parts.append(_table(m.to_frame()[["player", "value", "se"]]))
    parts.append(_p(f"Estimator: {m.estimator}. Error bars: 95 % intervals from the {m.se_kind}. "
                    f"v(all) = {float(m.v_all):.4f}, v(none) = {float(m.v_none):.4f}; the values add up to "
                    f"v(all) - v(none) with a gap of {m.efficiency_gap():.1e}."
                    + (" v(none) for AUROC is 0.5 exactly: a model that sees no token gives every sample "
                       "the same output, so no model call is made." if expl.task.kind == "multilabel" else "")))

    parts.append(f"<h2>4. Shapley values within each modality (other modalities {expl.others})</h2>")
    for name, res in expl.tokens.items():
        spec = expl.spec(name)
        parts.append(f"<h3>{html.escape(name)} ({spec.kind}, {spec.n_tokens} tokens)</h3>")
        parts.append(_img(plot_token_shapley(res, spec, truth.get("token_importance", {}).get(name)),
                          f"{name} token Shapley values", figures / f"shapley_tokens_{name}.png"))
        parts.append(_p(f"Estimator: {res.estimator}. Intervals: 95 % from the {res.se_kind}. "
                        f"v(all) = {float(res.v_all):.4f}, v(none) = {float(res.v_none):.4f}, efficiency gap "
                        f"{res.efficiency_gap():.1e}; {res.n_evaluations} coalitions scored."))

    if expl.agreement is not None and len(expl.agreement):
        parts.append("<h2>5. Agreement with the ground truth</h2>")
        parts.append(_p("The data carries the generator's true importance: Spearman's rho between Shapley values "
                        "and true shares, over all players and over the players that carry signal; noise players "
                        "(true share 0) should stay near zero."))
        parts.append(_table(expl.agreement, "{:.3f}"))

    timing = ", ".join(f"{k} {v:.1f} s" for k, v in expl.seconds.items())
    files = ", ".join(sorted(p.name for p in out.glob("*.csv")))
    parts.append("<h2>Files and timing</h2>")
    parts.append(_p(f"CSV files beside this page: {files}. Time: {timing}."))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
