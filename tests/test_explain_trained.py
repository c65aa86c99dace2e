"""A model trained for real on the synthetic data: explanations vs the generator's truth, the CLI, the report.

One small MIAM run (module scope) serves every test here.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from miam.cli import main
from miam.config import from_dict, save_config
from miam.explain import explain_model, write_report

#: a landscape and a model small enough to learn in well under a minute on 2 cores
DATA = {"seed": 0, "n_sites": 1500, "n_species": 12, "signal_scale": 4.0, "missing": {"satellite": 0.1}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from miam.training.run import train

    out = tmp_path_factory.mktemp("explain_run")
    cfg = from_dict({
        "data": {"name": "synthetic", "params": DATA, "batch_size": 64},
        "model": {"d_model": 32, "depth": 1, "heads": 4, "dropout": 0.0},
        "masking": {"strategy": "miam"},
        "optim": {"lr": 3e-3},
        "trainer": {"max_epochs": 10, "patience": 10, "progress_bar": False, "accelerator": "cpu"},
        "out_dir": str(out),
    })
    return train(cfg)


@pytest.fixture(scope="module")
def explanation(run):
    return explain_model(run.module.model, run.dataset.split("test"), run.module.task, max_permutations=32,
                         tolerance=2e-3, repeats=3, n_boot=100, truth=run.dataset.info["truth"], progress=False)


def test_explanations_find_the_generators_signal(explanation):
    """What a one-minute model reliably shows; the full acceptance figures come from
    ``benchmarks/explain_truth.py`` (a 30-epoch demo model), see the slow test below."""
    modalities = explanation.modalities
    truth = explanation.truth
    top = max(truth["modality_importance"], key=truth["modality_importance"].get)
    assert modalities.players[int(np.argmax(modalities.values))] == top == "env"
    env = explanation.tokens["env"]
    signal = np.asarray(truth["token_importance"]["env"]) > 0
    assert env.values[signal].mean() > 2 * env.values[~signal].mean()
    sat = explanation.tokens["satellite"]
    footprint = np.asarray(truth["token_importance"]["satellite"])
    assert sat.values[footprint == footprint.max()].mean() > sat.values[footprint == 0].mean()
    for res in [modalities, *explanation.tokens.values()]:
        assert res.efficiency_gap() < 1e-9
    assert {"modalities", "env", "climate", "satellite"} == set(explanation.agreement["level"])


def _demo_explanation(tmp_path, dataset_filter=None, overrides=()):
    """The demo config trained 30 epochs, explained as ``benchmarks/explain_truth.py`` does (300 test sites)."""
    from miam.cli.common import packaged_config
    from miam.config import load_config
    from miam.data.registry import build_dataset
    from miam.training.run import train

    cfg = load_config(str(packaged_config("demo.yaml")), ["trainer.progress_bar=false", f"out_dir={tmp_path}",
                                                            *overrides])
    dataset = build_dataset(cfg.data.name, **cfg.data.params)
    data = dataset if dataset_filter is None else dataset.select(dataset_filter)
    result = train(cfg, dataset=data)
    expl = explain_model(result.module.model, data.split("test"), max_permutations=64, tolerance=2e-3,
                         max_samples=300, truth=dataset.info["truth"], progress=False)
    agreement = expl.agreement.set_index("level")
    print(agreement.round(3).to_string())
    return agreement.round(9)      # Spearman of 5 tokens with one adjacent swap is 0.9, up to rounding


@pytest.mark.slow
def test_acceptance_against_the_truth_with_the_demo_model(tmp_path):
    """Modalities, env variables and satellite patches rank as the truth does; noise tokens stay near zero."""
    agreement = _demo_explanation(tmp_path)
    assert agreement.loc["modalities", "spearman_all"] == 1.0
    assert agreement.loc["env", "spearman_signal"] >= 0.9
    assert agreement.loc["satellite", "spearman_signal"] >= 0.9
    assert (agreement.loc[["env", "climate", "satellite"], "noise_vs_top_signal"] < 0.15).all()
    assert agreement["top_player_match"].all()


@pytest.mark.slow
def test_climate_months_rank_as_the_truth_in_a_climate_only_model(tmp_path):
    """In the joint model only the strongest months stand out (climate is starved there);
    alone, with the same estimator, the five signal months rank as the truth does."""
    agreement = _demo_explanation(tmp_path, ["climate"], ["masking.strategy=uniform_hypercube", "masking.params={}"])
    assert agreement.loc["climate", "spearman_signal"] >= 0.9
    assert agreement.loc["climate", "noise_vs_top_signal"] < 0.2


def test_report_has_every_plot_and_csv(explanation, tmp_path):
    path = write_report(explanation, tmp_path / "report")
    page = path.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3 + len(explanation.tokens)          # subsets, robustness, modalities + one per modality
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    # every plot is also a PNG file beside the page, the same bytes
    files = sorted((tmp_path / "report" / "figures").glob("*.png"))
    assert sorted(f.read_bytes() for f in files) == sorted(base64.b64decode(i) for i in images)
    assert {f.stem for f in files} == {"subsets", "robustness", "shapley_modalities",
                                       *[f"shapley_tokens_{m}" for m in explanation.tokens]}
    for name in ("subsets", "robustness", "robustness_summary", "shapley_modalities", "shapley_tokens",
                 "truth_agreement"):
        assert len(pd.read_csv(tmp_path / "report" / f"{name}.csv")) > 0
    tokens = pd.read_csv(tmp_path / "report" / "shapley_tokens.csv")
    assert {"env00", "Jun", "r1c1"} <= set(tokens["player"])


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium; .ci/run installs it, so under CI its absence fails the test instead of skipping it."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but Debian's chromium is not installed (.ci/run installs it with apt-get)")
        pytest.skip("Debian's chromium is not installed")
    return path


def test_report_renders_in_a_headless_browser(chromium, explanation, tmp_path):
    from PIL import Image

    path = write_report(explanation, tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    f"--screenshot={shot}", "--window-size=1200,3000", path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (3000, 1200) and pixels.std() > 20      # not a blank page


def test_under_ci_a_missing_browser_fails_the_render_test(tmp_path):
    env = {**os.environ, "CI": "true", "PATH": str(tmp_path)}       # no chromium on this PATH
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{Path(__file__)}::"
                           "test_report_renders_in_a_headless_browser"], env=env, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parent)
    assert proc.returncode == 1 and "CI is set but Debian's chromium is not installed" in proc.stdout, proc.stdout


def test_cli_evaluate_and_explain_from_a_checkpoint(run, tmp_path, capsys):
    ckpt = run.best_checkpoint
    assert main(["evaluate", "--checkpoint", ckpt, "--out", str(tmp_path / "ev.csv")]) == 0
    printed = capsys.readouterr().out
    assert "env+climate+satellite" in printed and "mean over all non-empty modality subsets" in printed
    assert len(pd.read_csv(tmp_path / "ev.csv")) == 7
    assert main(["evaluate", "--checkpoint", ckpt, "--subset", "env+satellite", "--subset", "climate",
                 "--out", str(tmp_path / "two.csv")]) == 0
    assert pd.read_csv(tmp_path / "two.csv")["subset"].tolist() == ["env+satellite", "climate"]
    args = ["explain", "--checkpoint", ckpt, "--out", str(tmp_path / "ex"), "--max-samples", "120",
            "--modalities", "env", "--max-permutations", "8", "--repeats", "1", "--n-boot", "10", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "antithetic" in printed
    assert (tmp_path / "ex" / "report.html").is_file()


def test_cli_errors_are_clear(run, tmp_path, capsys):
    ckpt = run.best_checkpoint
    assert main(["evaluate", "--checkpoint", ckpt, "--subset", "+"]) == 2
    assert "names no modality" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", ckpt, "--subset", "env+landsat"]) == 2
    assert "Unknown modality ['landsat']" in capsys.readouterr().err
    assert main(["explain", "--checkpoint", ckpt, "--modalities", "landsat", "--out", str(tmp_path)]) == 2
    assert "unknown modality ['landsat']" in capsys.readouterr().err
    other = from_dict({"data": {"name": "synthetic", "params": {**DATA, "n_env": 8, "n_env_informative": 4}}})
    save_config(other, tmp_path / "other.yaml")
    assert main(["evaluate", "--checkpoint", ckpt, "--config", str(tmp_path / "other.yaml")]) == 2
    assert "another dataset's specs: modality 'env' has 12 tokens in the model, 8 in the data" in \
        capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.ckpt")]) == 2
    assert "does not exist" in capsys.readouterr().err
