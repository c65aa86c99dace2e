"""Named input configurations (evaluation.configs), avg_paper_configs and the top-k F1."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

from miam.cli import main
from miam.config import from_dict
from miam.data.contract.spec import ModalitySpec
from miam.data.synthetic import make_dataset
from miam.errors import ConfigError
from miam.evaluation.configs import resolve_configs
from miam.evaluation.subsets import SubsetEvaluator, summarize_subsets
from miam.models import build_model
from miam.scores import samples_f1_topk
from miam.training.compare import compare

SPECS = [ModalitySpec("env", "tabular", 3, token_names=["bio1", "bio2", "soil"]),
         ModalitySpec("climate", "timeseries", 2, token_shape=(4,), token_names=["2017", "2018"]),
         ModalitySpec("landsat", "timeseries", 2, token_shape=(6,), token_names=["2017", "2018"])]
GROUPS = {"tabular": ["env"], "series": ["climate", "landsat"]}


def test_configs_resolve_names_globs_and_groups_to_token_masks():
    configs = resolve_configs(SPECS, [
        {"name": "bio only", "tokens": {"env": ["bio*"]}},
        {"name": "2018", "tokens": {"series": ["2018"]}},
        {"name": "soil + climate", "tokens": {"env": "soil", "climate": "all"}},
    ], GROUPS)
    assert [c.mask.int().tolist() for c in configs] == [[1, 1, 0, 0, 0, 0, 0],
                                                         [0, 0, 0, 0, 1, 0, 1],
                                                         [0, 0, 1, 1, 1, 0, 0]]
    assert [c.n_visible for c in configs] == [2, 2, 3]


@pytest.mark.parametrize("configs, message", [
    ([{"name": "x", "tokens": {"sat": "all"}}],
     r"evaluation.configs\[0\] \('x'\).tokens: unknown modality 'sat'; valid names are \['env', 'climate', "
     r"'landsat', 'tabular', 'series'\]"),
    ([{"name": "x", "tokens": {"env": ["bio3"]}}],
     r"evaluation.configs\[0\] \('x'\).tokens.env: no token of 'env' matches 'bio3'; valid token names are "
     r"\['bio1', 'bio2', 'soil'\]"),
    ([{"name": "x", "tokens": {"env": "all"}}, {"name": "x", "tokens": {"climate": "all"}}],
     r"evaluation.configs\[1\] \('x'\): the name 'x' is used twice"),
    ([{"name": "x", "tokens": {"env": []}}], r"expected 'all' or a non-empty list of token names of 'env'"),
    ([{"name": "x"}], r"evaluation.configs\[0\]: expected exactly the keys \['name', 'tokens'\], got \['name'\]"),
    ([{"name": "", "tokens": {"env": "all"}}], r"evaluation.configs\[0\].name: expected a non-empty string"),
])
def test_bad_configurations_are_errors_that_name_the_field(configs, message):
    with pytest.raises(ConfigError, match=message):
        resolve_configs(SPECS, configs, GROUPS)


def test_top_k_f1_matches_a_per_sample_reference():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(40, 12, generator=g)
    target = (torch.rand(40, 12, generator=g) < 0.3).long()
    target[0] = 0                                    # a sample with no species scores 0
    k = 4
    expected = []
    for p, y in zip(probs.tolist(), target.tolist()):
        top = set(sorted(range(12), key=lambda j: -p[j])[:k])
        true = {j for j in range(12) if y[j]}
        expected.append(2 * len(top & true) / (k + len(true)))
    assert float(samples_f1_topk(probs, target, k)) == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    with pytest.raises(ValueError, match="1 <= k <= 12"):
        samples_f1_topk(probs, target, 13)


def test_evaluate_scores_configs_beside_subsets_and_averages_them():
    ds = make_dataset(seed=0, n_sites=300, n_species=6)
    torch.manual_seed(0)
    model = build_model(ds.specs, ds.task, d_model=16, depth=1, heads=2).eval()
    evaluator = SubsetEvaluator(model, ds.task, batch_size=64)
    configs = resolve_configs(ds.specs, [{"name": "env00", "tokens": {"env": ["env00"]}},
                                         {"name": "everything", "tokens": {"env": "all", "climate": "all",
                                                                          "satellite": "all"}}])
    test = ds.split("test")
    table = evaluator.evaluate(test, None, configs, top_k_f1=3)
    assert list(table["kind"]) == ["subset"] * 7 + ["config"] * 2
    assert list(table.loc[table["kind"] == "config", "n_tokens"]) == [1, 40]
    full = table[(table["kind"] == "subset") & (table["subset"] == "env+climate+satellite")]
    everything = table[table["subset"] == "everything"]
    assert float(everything["value"].iloc[0]) == pytest.approx(float(full["value"].iloc[0]), abs=1e-9)
    # scored alone, the mask runs in another packed pass: logits agree to rounding, and an untrained
    # model's near-tied predictions can move the AUROC by a few 1e-4
    alone = evaluator.scores(test, [configs[0].mask])
    assert float(table.loc[table["subset"] == "env00", "value"].iloc[0]) == pytest.approx(float(alone[0]), abs=1e-3)
    s = summarize_subsets(table, evaluator.names)
    assert s["avg_paper_configs"] == pytest.approx(table.loc[table["kind"] == "config", "value"].mean())
    assert s["avg_modality_subsets"] == pytest.approx(table.loc[table["kind"] == "subset", "value"].mean())
    assert s["config:env00"] == float(table.loc[table["subset"] == "env00", "value"].iloc[0])
    assert s["avg_paper_configs/f1_top3"] == pytest.approx(table.loc[table["kind"] == "config", "f1_top3"].mean())
    with pytest.raises(Exception, match="top_k_f1 scores species lists of a multilabel task"):
        SubsetEvaluator(model, ds.task.__class__("multiclass", 6)).evaluate(test, None, (), top_k_f1=3)


TINY = {
    "data": {"name": "synthetic", "params": {"n_sites": 300, "n_species": 6}, "batch_size": 64},
    "model": {"d_model": 16, "depth": 1, "heads": 2},
    "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu"},
    "evaluation": {"configs": [{"name": "June only", "tokens": {"climate": ["Jun"]}},
                               {"name": "satellite centre", "tokens": {"satellite": ["r1c1", "r2c2"]}},
                               {"name": "all", "tokens": {"env": "all", "climate": "all", "satellite": "all"}}]},
}


def test_train_and_evaluate_print_every_configuration_and_both_averages(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "avg_paper_configs" in printed and "avg_modality_subsets" in printed
    table = pd.read_csv(out / "test_subsets.csv")
    assert list(table.loc[table["kind"] == "config", "subset"]) == ["June only", "satellite centre", "all"]
    assert main(["evaluate", "--checkpoint", str(out / "checkpoints" / "best.ckpt")]) == 0
    printed = capsys.readouterr().out
    for name in ("June only", "satellite centre", "env+climate+satellite"):
        assert name in printed
    line = next(ln for ln in printed.splitlines() if "avg_paper_configs" in ln)
    assert "mean over the 3 named configurations (avg_paper_configs)" in line and "avg_modality_subsets" in line
    # the HTML report shows them too
    assert main(["explain", "--checkpoint", str(out / "checkpoints" / "best.ckpt"), "--max-samples", "60",
                 "--max-permutations", "4", "--repeats", "1", "--n-boot", "10", "--no-progress"]) == 0
    html = (out / "explain" / "report.html").read_text()
    assert "The 3 named input configurations" in html and "June only" in html and "avg_paper_configs" in html
    # a typo in a configuration fails before any training
    bad = {**TINY, "evaluation": {"configs": [{"name": "x", "tokens": {"climate": ["June"]}}]}}
    config.write_text(yaml.safe_dump(bad))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "bad")]) == 2
    assert "no token of 'climate' matches 'June'; valid token names are ['Jan', 'Feb'" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_compare_with_groups_summarises_by_group(tmp_path):
    """Before: every run trained, then the summary failed with KeyError "Columns not found" (rows keyed by group)."""
    base = from_dict({**TINY, "data": {**TINY["data"], "groups": {"tabular": ["env"], "other": ["climate", "satellite"]}},
                      "evaluation": {"configs": [{"name": "June only", "tokens": {"climate": ["Jun"]}},
                                                 {"name": "tabular", "tokens": {"tabular": "all"}}]}})
    ds = make_dataset(seed=0, n_sites=300, n_species=6)
    result = compare(base, ["miam", "dropout"], seeds=1, dataset=ds, out_dir=tmp_path, log=lambda s: None)
    assert result.modalities == ["tabular", "other"]
    assert result.score_columns == ["full", "tabular", "other", "avg_modality_subsets", "avg_paper_configs"]
    for col in [*result.score_columns, "config:June only", "config:tabular"]:
        assert f"{col}_mean" in result.summary.columns
    md = (tmp_path / "summary.md").read_text()
    assert "avg_paper_configs" in md and "the 2 named input configurations" in md
    assert "of 2 runs reached the epoch cap" in md


@pytest.mark.parametrize("name, n_configs", [("demo", 12), ("synthetic_geoplant", 12), ("synthetic_taxabench", 10),
                                             ("synthetic_satbird", 5)])
def test_packaged_synthetic_configs_resolve_on_their_data(name, n_configs):
    from miam.cli.common import packaged_config
    from miam.config import load_config
    from miam.data.registry import build_dataset

    cfg = load_config(packaged_config(f"{name}.yaml"))
    ds = build_dataset(cfg.data.name, **{**cfg.data.params, "n_sites": 200})
    configs = resolve_configs(ds.specs, cfg.evaluation.configs, cfg.data.groups)
    assert len(configs) == n_configs and configs[-1].name == "all"
    assert configs[-1].n_visible == sum(s.n_tokens for s in ds.specs)
