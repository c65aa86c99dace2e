"""The rough edges a new user met on real survey files (issue 14), each on a tiny real file set.

Every test's docstring quotes what the same files gave before the fix.
"""

from __future__ import annotations

import logging
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from data import files as fixture
from miam.cli import main
from miam.config import load_config
from miam.data.files.loader import FilesData
from miam.errors import ConfigError, DataFormatError


def survey(folder, n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A plain survey table without coordinates: plot id, two soil numbers, two species."""
    rng = np.random.default_rng(seed)
    ph = rng.normal(6.0, 1.0, n)
    return pd.DataFrame({"plot": [f"P{i:02d}" for i in range(n)], "ph": ph.round(2),
                         "clay": rng.normal(20, 5, n).round(1),
                         "sp1": (ph + rng.normal(0, 0.5, n) > 6).astype(int), "sp2": rng.integers(0, 2, n)})


def build(root, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FilesData(root=str(root), progress=False, **params).build()


SOIL = [{"name": "soil", "columns": ["ph", "clay"]}]


@pytest.mark.parametrize("xy", [{}, {"x": None, "y": None}])
def test_coordinates_are_optional_without_rasters_or_spatial_split(tmp_path, xy):
    """Before: ``sites.csv: no coordinate columns; name them with x and y (tried [['lon', 'lat'], ...``,
    also with ``x: null, y: null``."""
    survey(tmp_path).to_csv(tmp_path / "sites.csv", index=False)
    ds = build(tmp_path, sites={"path": "sites.csv", "id": "plot", **xy}, targets={"species": ["sp*"]},
               tables=SOIL, split={"method": "random"})
    assert ds.modalities == ["soil"] and len(ds) == 60 and ds.coords is None
    with pytest.raises(DataFormatError, match=r"sites\.csv: no coordinate columns, needed by the spatial split "
                                              r"\(split\.method: spatial, the default; or use random or column\); "
                                              r"name them with x and y"):
        build(tmp_path, sites={"path": "sites.csv", "id": "plot", **xy}, targets={"species": ["sp*"]}, tables=SOIL)
    fixture.write_rasters(tmp_path)
    with pytest.raises(DataFormatError, match=r"sites\.csv: no coordinate columns, needed by the raster modalities "
                                              r"\['climate'\]; name them with x and y"):
        build(tmp_path, sites={"path": "sites.csv", "id": "plot", **xy}, targets={"species": ["sp*"]}, tables=SOIL,
              rasters=[{"name": "climate", "paths": ["bio.tif"]}], split={"method": "random"})


def test_an_empty_header_names_the_id_column(tmp_path):
    """Before: ``id: ""`` on a table fell back to the sites' id (``soil.csv: no id column 'plot'; its columns
    are ['Unnamed: 0', 'ph']``) and on the sites table gave ``no id column ''``."""
    df = survey(tmp_path)
    df.rename(columns={"plot": ""}).drop(columns=["ph", "clay"]).to_csv(tmp_path / "sites.csv", index=False)
    df[["plot", "ph", "clay"]].rename(columns={"plot": ""}).to_csv(tmp_path / "soil.csv", index=False)
    ds = build(tmp_path, sites={"path": "sites.csv", "id": ""}, targets={"species": ["sp*"]},
               tables=[{"name": "soil", "path": "soil.csv", "id": ""}], split={"method": "random"})
    assert ds.info["site_ids"][:2].tolist() == ["P00", "P01"]
    assert ds.spec("soil").token_names == ("ph", "clay")          # the id column is not a feature
    assert ds.present["soil"].all()                                 # every row matched its site
    # pandas' own name for the column works too, and two empty headers are ambiguous
    again = build(tmp_path, sites={"path": "sites.csv", "id": "Unnamed: 0"}, targets={"species": ["sp*"]},
                  tables=[{"name": "soil", "path": "soil.csv", "id": ""}], split={"method": "random"})
    np.testing.assert_array_equal(again.tokens["soil"], ds.tokens["soil"])
    df.rename(columns={"plot": "", "ph": ""}).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(DataFormatError, match=r"two\.csv: id column '' names the column with an empty header, but "
                                              r"the file has 2 such columns \['Unnamed: 0', 'Unnamed: 1'\]"):
        build(tmp_path, sites={"path": "two.csv", "id": ""}, targets={"species": ["sp*"]}, tables=SOIL,
              split={"method": "random"})


def test_a_duplicated_header_is_an_error_naming_both(tmp_path):
    """Before: the second ``ph`` silently became a token ``ph.1``."""
    df = survey(tmp_path).assign(x=0.0, y=0.0)
    df.insert(3, "ph_again", df["ph"] + 1)
    df.to_csv(tmp_path / "sites.csv", index=False, header=[*df.columns[:3], "ph", *df.columns[4:]])
    with pytest.raises(DataFormatError, match=r"sites\.csv: column 'ph' appears twice in the header \(columns 2 "
                                              r"and 4; pandas would read the second as 'ph\.1'\); rename one"):
        build(tmp_path, sites={"path": "sites.csv", "id": "plot", "crs": None}, targets={"species": ["sp*"]},
              tables=[{"name": "soil"}], split={"method": "random"})


def write_survey(folder):
    """The survey as ``sites.csv``, with grid coordinates ``x``, ``y`` (no CRS) so that main read it too."""
    survey(folder).assign(x=np.arange(60.0) * 100, y=np.arange(60) % 7 * 100.0).to_csv(folder / "sites.csv",
                                                                                    index=False)


def one_table_config(root, out, **masking):
    """A run on the survey of :func:`write_survey`: one numeric table, MIAM with its parameters, a tiny model."""
    return {"data": {"name": "files", "params": {"root": str(root),
                                                 "sites": {"path": "sites.csv", "id": "plot", "crs": None},
                                                 "targets": {"species": ["sp*"]}, "tables": SOIL,
                                                 "split": {"method": "random"}, "progress": False},
                     "batch_size": 16},
            "model": {"d_model": 16, "depth": 1, "heads": 2, "n_frequencies": 8},
            "masking": {"strategy": "miam", "params": {"kappa": 10, "lambda_s": 1, "lambda_d": 1}, **masking},
            "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu"}, "out_dir": str(out)}


def write_config(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_a_single_modality_says_miam_needs_two_and_trains_with_dropout(tmp_path, capsys):
    """Before: ``Miam needs at least 2 modalities, got 1: ['soil']``, raised while building the model,
    with no way out in the message or the docs."""
    write_survey(tmp_path)
    config = write_config(tmp_path / "cfg.yaml", one_table_config(tmp_path, tmp_path / "run"))
    assert main(["train", "--config", config]) == 2
    err = capsys.readouterr().err
    assert ("files dataset: masking.strategy 'miam' balances modalities against each other and needs at least 2 "
            "modalities, got 1: ['soil']. With one modality, mask it with masking: {strategy: dropout") in err
    assert "or add a second table or raster" in err and not (tmp_path / "run").exists()
    # with groups the count is known from the config alone, before any file is read
    grouped = one_table_config(tmp_path, tmp_path / "run")
    grouped["data"]["groups"] = {"soil": ["soil"]}
    with pytest.raises(ConfigError, match=r"data\.groups: masking\.strategy 'miam' balances modalities"):
        load_config(write_config(tmp_path / "grouped.yaml", grouped))
    # the way out the message gives trains for real
    single = one_table_config(tmp_path, tmp_path / "run", strategy="dropout", params={"q": 0.1})
    assert main(["train", "--config", write_config(tmp_path / "dropout.yaml", single)]) == 0
    assert "soil" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def test_a_strategy_switched_from_the_command_line_keeps_only_its_parameters(tmp_path, capsys, caplog):
    """Before: ``--set masking.strategy=dropout`` on a config with MIAM's parameters failed with
    ``ModalityDropout got an unexpected parameter 'kappa'``."""
    write_survey(tmp_path)
    config = write_config(tmp_path / "cfg.yaml", one_table_config(tmp_path, tmp_path / "run"))
    caplog.set_level(logging.INFO, logger="miam")
    assert main(["train", "--config", config, "--set", "masking.strategy=dropout"]) == 0
    assert ("masking.strategy=dropout: dropped the parameter(s) ['kappa', 'lambda_d', 'lambda_s'] it does not take "
            "(it takes ['q'])") in caplog.text
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["masking"]
    assert saved["strategy"] == "dropout" and saved["params"] == {}
    # a parameter both strategies take is kept
    assert load_config(write_config(tmp_path / "q.yaml", one_table_config(
        tmp_path, tmp_path / "o", strategy="constant", params={"q": 0.4})), ["masking.strategy=dropout"]
    ).masking.params == {"q": 0.4}
    # parameters set along with the switch: nothing is dropped, and a wrong one still lists the valid ones
    cfg = load_config(config, ["masking.strategy=opm", "masking.params.q=0.3"])
    assert cfg.masking.params == {"kappa": 10, "lambda_d": 1, "lambda_s": 1, "q": 0.3}
    assert main(["train", "--config", config, "--out", str(tmp_path / "other"), "--set", "masking.strategy=dropout",
                 "--set", "masking.params.kappa=3"]) == 2
    assert "ModalityDropout got an unexpected parameter 'kappa'; valid parameters are ['q']" in capsys.readouterr().err


def test_a_non_empty_out_dir_needs_resume_or_overwrite(tmp_path, capsys):
    """Before: training again into an existing ``out_dir`` wrote ``best-v1.ckpt`` with only Lightning's warning,
    so ``best.ckpt`` was the old model; ``--resume`` with no checkpoint silently started afresh."""
    write_survey(tmp_path)
    out = tmp_path / "run"
    config = write_config(tmp_path / "cfg.yaml", one_table_config(tmp_path, out, strategy="dropout", params={}))
    assert main(["train", "--config", config, "--resume"]) == 2
    assert (f"--resume: there is no checkpoint to resume from ({out / 'checkpoints' / 'last.ckpt'} does not exist); "
            f"run without --resume") in capsys.readouterr().err
    assert main(["train", "--config", config]) == 0
    first = (out / "checkpoints" / "best.ckpt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--config", config, "--set", "trainer.seed=1"]) == 2
    assert (f"out_dir {str(out)!r} is not empty (it holds ['checkpoints', 'config.yaml', 'logs', 'test_subsets.csv', "
            f"'trajectory.csv']); pass --resume to continue its run, --overwrite to replace it"
            ) in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--config", config, "--set", "trainer.seed=1", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (out / "checkpoints" / "best.ckpt").read_bytes() != first and (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in (out / "logs").iterdir()] == ["version_0"]


@pytest.fixture(scope="module")
def survey_run(tmp_path_factory):
    """The plain survey trained for 2 epochs with dropout by ``miam train``; returns (root, best checkpoint)."""
    root = tmp_path_factory.mktemp("survey")
    write_survey(root)
    pd.read_csv(root / "sites.csv").rename(columns={"x": "east", "y": "north"}).to_csv(root / "sites.csv", index=False)
    cfg = one_table_config(root, root / "run", strategy="dropout", params={"q": 0.1})
    cfg["data"]["params"]["sites"].update(x="east", y="north")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--config", write_config(root / "cfg.yaml", cfg)]) == 0
    return root, root / "run" / "checkpoints" / "best.ckpt"


def test_predicted_sites_keep_the_id_column_name(survey_run, tmp_path):
    """Before: ``miam predict --sites`` wrote the ``plot`` ids under ``site_id`` (and ``east``/``north`` under x, y)."""
    root, ckpt = survey_run
    assert main(["predict", "--checkpoint", str(ckpt), "--sites", str(root / "sites.csv"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == ["plot", "east", "north", "sp1", "sp2", "present_soil", "modalities", "no_data"]
    assert table["plot"].tolist() == survey(tmp_path)["plot"].tolist() and not table["no_data"].any()


def test_training_output_is_quiet_and_one_line_per_epoch_when_not_a_terminal(tmp_path, capfd, caplog):
    """Before: a redirected ``miam train`` printed ``💡 Tip: For seamless cloud logging ... litlogger``, a
    ``LeafSpec`` deprecation warning, ``The number of training batches (4) is smaller than the logging interval
    Trainer(log_every_n_steps=10)`` and tqdm bars redrawn with carriage returns, several per epoch; a warning
    about the data came as ``.../files.py:242: UserWarning: soil: ...`` followed by the source line that raised it."""
    write_survey(tmp_path)
    pd.read_csv(tmp_path / "sites.csv").assign(ph=lambda df: df["ph"].where(df.index != 3)).to_csv(
        tmp_path / "sites.csv", index=False)
    cfg = one_table_config(tmp_path, tmp_path / "run", strategy="dropout", params={})
    cfg["trainer"].update(progress_bar=True, max_epochs=3)
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--config", write_config(tmp_path / "cfg.yaml", cfg)]) == 0
    out, err = capfd.readouterr()
    everything = out + err + caplog.text + "\n".join(str(w.message) for w in caught)
    for noise in ("Tip", "litlogger", "LeafSpec", "log_every_n_steps", "it/s", "\r", "UserWarning", ".build()"):
        assert noise not in everything, noise
    assert "warning: soil: sites.csv: 1 token(s) with empty cells\n" in err
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(re.search(r"train/loss \d\.\d{3}, val/selection \d\.\d{3} \(\d+\.\d s\)$", line) for line in epochs)


def test_categorical_rasters_as_patches_are_one_hot_per_class(tmp_path):
    """Before: ``raster 'landcover': categorical layers are read as values (one class per token), not patches;
    drop 'patch' or 'categorical'.``"""
    from rasterio.transform import from_origin

    classes = np.array([1, 2, 5], dtype=np.int16)[(np.arange(20)[:, None] // 4 + np.arange(20)[None, :] // 4) % 3]
    classes[:2, :] = 0                                            # nodata in the top two rows
    fixture.write_geotiff(tmp_path / "lc.tif", classes[None], "EPSG:4326", from_origin(2.0, 46.0, 0.01, 0.01), 0)
    rows = np.array([2, 12, 10, 17, 6, 14] * 5)
    cols = np.array([2, 12, 5, 17, 13, 3] * 5)
    lon, lat = fixture.pixel_centre(rows, cols)
    df = survey(tmp_path, n=30).assign(lon=lon, lat=lat)
    df.to_csv(tmp_path / "sites.csv", index=False)
    ds = build(tmp_path, sites={"path": "sites.csv", "id": "plot"}, targets={"species": ["sp*"]}, tables=SOIL,
               rasters=[{"name": "landcover", "paths": ["lc.tif"], "categorical": True, "patch": 4,
                         "token_size": 2}], split={"method": "random"})
    spec = ds.spec("landcover")
    assert (spec.kind, spec.n_tokens, spec.token_shape) == ("image", 4, (3, 2, 2))   # classes 1, 2, 5
    tokens, present = ds.tokens["landcover"], ds.present["landcover"]
    # site 1 at pixel (12, 12): its 4 x 4 patch spans rows and cols 11..14, so token r0c0 holds rows and cols
    # 11..12, across a class boundary
    expect = classes[11:13, 11:13]
    assert len(np.unique(expect)) == 3
    for channel, cls in enumerate([1, 2, 5]):
        np.testing.assert_array_equal(tokens[1, 0, channel], (expect == cls).astype(np.float32))
    assert (tokens[present].sum(axis=1) == 1).all()              # exactly one class per visible pixel
    # site 0 at pixel (2, 2): its upper tokens touch the nodata rows and are hidden, the lower ones are not
    assert present[0].tolist() == [False, False, True, True]


def test_species_from_another_table_with_presence_and_absence_filters(tmp_path):
    """Before: ``sites.csv: targets.species names column 'path', which matches no column`` and
    ``data.params.targets: unknown key(s) ['min_absences']``: 61 species names were listed by hand."""
    df = survey(tmp_path, n=40)
    df[["plot", "ph", "clay"]].to_csv(tmp_path / "sites.csv", index=False)
    counts = pd.DataFrame({"plot": df["plot"], "common": 1, "rare": 0, "sp1": df["sp1"] * 3, "sp2": df["sp2"]})
    counts.loc[0, "common"] = 0
    counts.loc[[3, 7], "rare"] = 1
    counts.iloc[::-1].to_csv(tmp_path / "species.csv", index=False)            # another order than the sites
    ds = build(tmp_path, sites={"path": "sites.csv", "id": "plot"}, split={"method": "random"},
               targets={"species": {"path": "species.csv"}, "min_presences": 3, "min_absences": 2}, tables=SOIL)
    assert ds.task.output_names == ("sp1", "sp2") and ds.modalities == ["soil"]
    np.testing.assert_array_equal(ds.target, df[["sp1", "sp2"]].to_numpy(dtype=np.float32))
    assert ds.info["dropped_species"] == {"common": "1 absence(s)", "rare": "2 presence(s)"}
    notes = ds.info["report"]["notes"]
    assert "1 species with fewer than 3 presence(s) dropped: ['rare']." in notes
    assert "1 species with fewer than 2 absence(s) dropped: ['common']." in notes
    counts.iloc[1:].to_csv(tmp_path / "species.csv", index=False)
    with pytest.raises(DataFormatError, match=r"species\.csv: 1 site\(s\) of sites\.csv have no row in column 'plot' "
                                              r"\(e\.g\. \['P00'\]\); every site needs its species values"):
        build(tmp_path, sites={"path": "sites.csv", "id": "plot"}, split={"method": "random"}, tables=SOIL,
              targets={"species": {"path": "species.csv", "columns": ["sp*"]}})


def test_a_summary_is_printed_after_reading_any_files_dataset(survey_run, tmp_path, capsys):
    """Before: a plain table with nothing missing printed nothing of what was read (the one line,
    ``files dataset: 60 sites, 2 outputs (multilabel); hidden tokens: soil 0.0%``, was logged at INFO, which no
    command showed)."""
    root, ckpt = survey_run
    assert main(["predict", "--checkpoint", str(ckpt), "--sites", str(root / "sites.csv"),
                 "--out", str(tmp_path / "p.csv")]) == 0          # predict reads the training files again
    err = capsys.readouterr().err
    lines = err[err.index("files dataset:"):].splitlines()
    assert lines[0] == "files dataset: 60 sites (train 42, val 9, test 9); 2 species (sp1, sp2)"
    assert lines[1].split() == ["modality", "kind", "tokens", "read", "from", "hidden", "sites", "without", "any"]
    assert lines[2].split() == ["soil", "tabular", "2", "sites.csv:", "ph,", "clay", "0.0%", "0"]
    # with missing cells and a site with no data at all, the table says so
    df = survey(tmp_path)
    df.loc[[0, 1], "ph"] = np.nan
    df.loc[1, "clay"] = np.nan
    df.to_csv(tmp_path / "sites.csv", index=False)
    summary = build(tmp_path, sites={"path": "sites.csv", "id": "plot"}, targets={"species": ["sp*"]}, tables=SOIL,
                    split={"method": "random"}).info["summary"]
    assert summary.splitlines()[2].split()[-2:] == ["2.5%", "1"]
    assert "1 site(s) have no data in any modality (e.g. ['P01'])" in summary
