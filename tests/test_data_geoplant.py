"""GeoPlant: a tiny tree in the published (Kaggle GLC24) layout -> miam prepare -> cached dataset -> training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from data import geoplant as fixture
from data import tiny_run
from miam.cli import main
from miam.data.benchmarks.geoplant import ENV_TABLES, GeoPlantSource, load_geoplant, patch_path
from miam.data.benchmarks.prepare import cache_key, prepare
from miam.data.contract.splits import lonlat_to_km
from miam.data.registry import build_dataset
from miam.errors import DataFormatError, DatasetNotFoundError, StaleCacheError
from miam.training.data import MultimodalDataModule

ABOVE = 3  # the tiny set's presence threshold (the paper's is 20)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("geoplant")
    return root, fixture.write(root, seed=0)


@pytest.fixture(scope="module")
def ds(raw):
    root, _ = raw
    assert main(["prepare", "geoplant", "--root", str(root), "--set", f"presences_above={ABOVE}",
                 "--no-progress"]) == 0
    return load_geoplant(root, presences_above=ABOVE)


def fresh(tmp_path, seed=1):
    root = tmp_path / "raw"
    return root, fixture.write(root, seed=seed)


def test_tokens_are_memmaps_with_published_shapes_and_names(ds, raw):
    _, truth = raw
    assert [s.name for s in ds.specs] == ["env", "climate", "landsat", "sentinel"]
    assert all(isinstance(a, np.memmap) for a in ds.tokens.values())
    env, climate, landsat, sentinel = ds.specs
    assert list(env.token_names) == list(truth["env"].columns)
    assert env.token_names[:2] == ("Bio1", "Bio2") and "HumanFootprint-Roads" in env.token_names
    assert (climate.n_tokens, climate.token_shape, climate.token_names[0]) == (19, (4, 12), "2000")
    assert (landsat.n_tokens, landsat.token_shape, landsat.token_names[-1]) == (21, (6, 4), "2020")
    assert (sentinel.grid, sentinel.token_shape) == ((8, 8), (4, 16, 16))
    assert len(ds) == len(truth["survey_ids"]) and ds.ids.tolist() == sorted(truth["survey_ids"].tolist())
    batch = ds.__getitems__([0, 1, 2])
    batch.validate(ds.specs, ds.task)


def test_values_match_the_files(ds, raw):
    root, truth = raw
    row = {int(s): i for i, s in enumerate(ds.ids)}
    for sid, cube in truth["climate"].items():
        np.testing.assert_allclose(ds.tokens["climate"][row[sid]], cube.permute(1, 0, 2).numpy(), rtol=1e-6)
    for sid, cube in truth["landsat"].items():
        np.testing.assert_allclose(ds.tokens["landsat"][row[sid]], cube.permute(2, 0, 1).numpy(), rtol=1e-6)
    env = truth["env"].loc[ds.ids].to_numpy()
    ok = np.isfinite(env)
    np.testing.assert_array_equal(ds.present["env"], ok)
    np.testing.assert_allclose(ds.tokens["env"][..., 0][ok], env[ok], rtol=1e-6)
    sid = int(ds.ids[0])
    rgb = np.asarray(Image.open(patch_path(root / "PA_Train_SatellitePatches_RGB/pa_train_patches_rgb", sid)))
    np.testing.assert_array_equal(ds.tokens["sentinel"][row[sid], 0, :3], rgb[:16, :16].transpose(2, 0, 1))
    kept = [int(n.split("_")[1]) for n in ds.task.output_names]
    for i, s in enumerate(ds.ids[:10]):
        want = [k for k in truth["species"][int(s)] if k in kept]
        got = [kept[j] for j in np.flatnonzero(ds.target[i])]
        assert got == want


def test_missing_data_is_hidden_counted_and_never_a_value(ds, raw):
    _, truth = raw
    row = {int(s): i for i, s in enumerate(ds.ids)}
    assert not ds.present["sentinel"][row[truth["no_rgb"]]].any()
    hidden_year = ~ds.present["climate"][row[truth["nan_climate"]]]
    assert hidden_year.tolist() == [y == 3 for y in range(19)]
    report = ds.info["report"]
    assert report["missing_files"] == {"sentinel": 1}
    assert report["hidden_tokens"]["env"] == int((~np.isfinite(truth["env"].to_numpy())).sum())
    batch = ds.__getitems__([row[truth["no_rgb"]], row[truth["nan_climate"]]])
    assert batch.tokens["sentinel"][0].abs().sum() == 0 and torch.isfinite(batch.tokens["climate"]).all()
    assert batch.tokens["climate"][1, 3].abs().sum() == 0


def test_species_filter_keeps_more_than_threshold(ds, raw):
    _, truth = raw
    want = sorted(s for s, c in truth["counts"].items() if c > ABOVE)
    assert [int(n.split("_")[1]) for n in ds.task.output_names] == want
    assert len(want) < len(truth["counts"])
    np.testing.assert_allclose(ds.positive_counts().numpy(), [truth["counts"][s] for s in want])


def test_spatial_blocks_are_disjoint_and_saved(ds, raw):
    root, _ = raw
    block = np.floor(lonlat_to_km(ds.coords) / 10.0).astype(int)
    cells = {k: {tuple(b) for b in block[v]} for k, v in ds.splits.items()}
    assert set(ds.splits) == {"train", "val", "test"}
    assert not (cells["train"] & cells["test"]) and not (cells["train"] & cells["val"])
    assert sorted(np.concatenate(list(ds.splits.values())).tolist()) == list(range(len(ds)))
    saved = list((ds.cache_dir / "splits").glob("spatial_10km*.csv"))
    assert len(saved) == 1 and set(pd.read_csv(saved[0])["split"]) == {"train", "val", "test"}
    again = load_geoplant(root, presences_above=ABOVE)
    assert all((again.splits[k] == v).all() for k, v in ds.splits.items())


def test_short_real_training_run_reads_the_cache(ds, raw, tmp_path):
    root, _ = raw
    groups = {"tabular": ["env"], "timeseries": ["climate", "landsat"], "satellite": ["sentinel"]}
    result = tiny_run("geoplant", {"root": str(root), "presences_above": ABOVE}, tmp_path / "run", groups=groups)
    assert result.module.group_names == ["tabular", "timeseries", "satellite"]
    assert result.epochs >= 1 and len(result.module.trajectory_) >= 3
    assert result.dataset.task.n_outputs == ds.task.n_outputs
    assert isinstance(result.dataset.tokens["sentinel"], np.memmap)


def test_loaders_read_raw_uint8_and_finish_to_the_standardised_batch(ds):
    idx = [7, 2, 30, 2, 11]
    raw = ds.read(idx)
    assert raw.tokens["sentinel"].dtype == torch.uint8 and raw.tokens["env"].dtype == torch.float32
    norm = json.loads((ds.cache_dir / "manifest.json").read_text())["norm"]
    for m, x in ds.finish(raw).tokens.items():                           # (x - mean) / std, 0 where missing
        mean, std = (torch.tensor(norm[m][k]) for k in ("mean", "std"))
        pres = torch.from_numpy(ds.present[m][idx])
        want = (torch.from_numpy(np.asarray(ds.tokens[m][idx], dtype=np.float32)) - mean) / std
        want[~pres] = 0.0
        assert torch.allclose(x, want, atol=1e-5), m
    n = min(4, len(ds.split("val")))
    dm = MultimodalDataModule(ds, batch_size=4, eval_batch_size=n, num_workers=1)
    first = next(iter(dm.val_dataloader()))
    assert first.tokens["sentinel"].dtype == torch.uint8
    finished = dm.on_after_batch_transfer(first.to("cpu"), 0)
    expected = ds.split("val").__getitems__(list(range(n)))
    for m in expected.tokens:
        assert torch.equal(finished.tokens[m], expected.tokens[m]) and torch.equal(finished.present[m], expected.present[m])
    assert torch.equal(finished.target, expected.target) and torch.equal(finished.ids, expected.ids)


def test_registry_builds_the_same_dataset(ds, raw):
    root, _ = raw
    again = build_dataset("geoplant", root=str(root), presences_above=ABOVE)
    assert again.cache_dir == ds.cache_dir and len(again) == len(ds)


def test_stale_cache_is_detected_and_force_rebuilds(tmp_path):
    root, _ = fresh(tmp_path)
    load_geoplant(root, presences_above=ABOVE, modalities=["env"])
    elevation = root / ENV_TABLES["elevation"].format(s="train")
    table = pd.read_csv(elevation)
    table.loc[0, "Elevation"] = 1234.5
    table.to_csv(elevation, index=False)
    with pytest.raises(StaleCacheError, match="elevation.csv.*--force"):
        load_geoplant(root, presences_above=ABOVE, modalities=["env"])
    assert main(["prepare", "geoplant", "--root", str(root), "--set", f"presences_above={ABOVE}",
                 "--set", "modalities=[env]", "--force", "--no-progress"]) == 0
    assert load_geoplant(root, presences_above=ABOVE, modalities=["env"]).tokens["env"].shape[1] == 46


def test_prepare_resumes_after_interruption(tmp_path):
    root, _ = fresh(tmp_path)
    source = GeoPlantSource(root, presences_above=ABOVE)
    cdir = prepare(source, tmp_path / "cache", chunk_rows=8, stop_after=2, progress=False)
    state = json.loads((cdir / "progress.json").read_text())
    assert state["rows_done"] == 16 and not (cdir / "manifest.json").exists()
    prepare(GeoPlantSource(root, presences_above=ABOVE), tmp_path / "cache", chunk_rows=8, progress=False)
    whole = prepare(GeoPlantSource(root, presences_above=ABOVE), tmp_path / "other", chunk_rows=100, progress=False)
    for part in ("tokens/sentinel", "tokens/climate", "present/env", "target"):
        np.testing.assert_array_equal(np.load(cdir / f"{part}.npy"), np.load(whole / f"{part}.npy"))
    a, b = (json.loads((d / "manifest.json").read_text())["norm"] for d in (cdir, whole))
    np.testing.assert_allclose(a["climate"]["mean"], b["climate"]["mean"], rtol=1e-6)


def test_truncated_jpeg_warns_with_file_and_survey(tmp_path):
    root, truth = fresh(tmp_path)
    sid = int(truth["survey_ids"][10])
    path = patch_path(root / "PA_Train_SatellitePatches_RGB/pa_train_patches_rgb", sid)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.warns(UserWarning, match=rf"{sid}\.jpeg \(surveyId {sid}\).*hidden"):
        ds = load_geoplant(root, presences_above=ABOVE, modalities=["sentinel"])
    assert not ds.present["sentinel"][list(ds.ids).index(sid)].any()
    assert ds.info["report"]["corrupt_files"] == {"sentinel": 1}


def test_metadata_missing_a_column_names_file_and_column(tmp_path):
    root, _ = fresh(tmp_path)
    meta = root / "GLC24_PA_metadata_train.csv"
    pd.read_csv(meta).drop(columns=["lat"]).to_csv(meta, index=False)
    with pytest.raises(DataFormatError, match=r"GLC24_PA_metadata_train\.csv: missing column\(s\) \['lat'\]"):
        load_geoplant(root, modalities=["env"])


def test_survey_in_one_table_only_warns_and_hides(tmp_path):
    root, truth = fresh(tmp_path)
    soil = root / ENV_TABLES["soil"].format(s="train")
    table = pd.read_csv(soil)
    gone = int(table.loc[4, "surveyId"])
    table.drop(index=4).to_csv(soil, index=False)
    with pytest.warns(UserWarning, match=rf"soilgrids\.csv: 1 surveyId\(s\) of the metadata have no row.*{gone}"):
        ds = load_geoplant(root, presences_above=ABOVE, modalities=["env"])
    soil_cols = [i for i, n in enumerate(ds.specs[0].token_names) if n.startswith("Soilgrid")]
    assert not ds.present["env"][list(ds.ids).index(gone), soil_cols].any()


def test_non_numeric_cell_names_the_line(tmp_path):
    root, _ = fresh(tmp_path)
    elevation = root / ENV_TABLES["elevation"].format(s="train")
    table = pd.read_csv(elevation, dtype={"Elevation": object})
    table.loc[6, "Elevation"] = "high"
    table.to_csv(elevation, index=False)
    with pytest.raises(DataFormatError, match=r"elevation\.csv, line 8, column 'Elevation': 'high'"):
        load_geoplant(root, modalities=["env"])


def test_missing_dataset_says_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"GLC24_PA_metadata_train\.csv.*download=True.*kaggle"):
        load_geoplant(tmp_path / "nothing")


def test_download_ladder_fetches_offline_from_a_local_url(tmp_path, monkeypatch):
    root, _ = fresh(tmp_path)
    served = tmp_path / "served"
    served.mkdir()
    shutil.move(root / "GLC24_PA_metadata_train.csv", served / "GLC24_PA_metadata_train.csv")
    monkeypatch.setattr(GeoPlantSource, "url", served.as_uri() + "/{}")
    with pytest.raises(DatasetNotFoundError, match="download=True"):
        GeoPlantSource(root)
    GeoPlantSource(root, download=True)
    assert (root / "GLC24_PA_metadata_train.csv").is_file()
    assert cache_key(GeoPlantSource(root)) != cache_key(GeoPlantSource(root, presences_above=5))


def test_packaged_config_lists_the_papers_twelve_configurations(ds):
    from miam.cli.common import packaged_config
    from miam.config import load_config
    from miam.evaluation.configs import resolve_configs

    cfg = load_config(packaged_config("geoplant.yaml"))
    configs = resolve_configs(ds.specs, cfg.evaluation.configs, cfg.data.groups)
    assert [c.name for c in configs] == [
        "BIO1 only", "BIO1 + WorldClim", "Clim 2018", "Clim 2018 + Clim 2000-2018", "satellite centre patch",
        "tabular", "time series", "satellite", "tab + ts", "tab + sat", "ts + sat", "all"]
    names = [n for s in ds.specs for n in s.token_names]
    visible = {c.name: [n for n, v in zip(names, c.mask.tolist()) if v] for c in configs}
    assert visible["BIO1 only"] == ["Bio1"]
    assert visible["BIO1 + WorldClim"] == [f"Bio{i}" for i in range(1, 20)]
    assert visible["Clim 2018"] == ["2018"] and visible["satellite centre patch"] == ["r3c3", "r3c4", "r4c3", "r4c4"]
    assert configs[-1].n_visible == len(names) and cfg.evaluation.top_k_f1 == 25
