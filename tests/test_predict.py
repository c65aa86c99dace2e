"""``miam predict`` and ``miam map`` on a model trained with ``miam train`` on real files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from data import files as fixture
from miam.cli import main
from miam.data.files.grid import Grid
from miam.data.files.io import Sites
from miam.errors import ConfigError, InvalidParameterError
from miam.predict import Predictor

PARAMS = {
    "sites": {"path": "sites.csv"},
    "targets": {"species": ["sp_*"]},
    "tables": [{"name": "site", "columns": ["habitat", "ph"]}],
    "rasters": [{"name": "climate", "paths": ["bio.tif", "elev.tif"]},
                {"name": "patch", "paths": ["bio.tif"], "bands": [1], "patch": 4, "token_size": 2}],
    "images": [{"name": "photos", "folder": "photos", "size": 16, "token_size": 8}],
    "split": {"method": "column"},
    "progress": False,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Files + a 2-epoch tiny model trained by the CLI; returns (root, checkpoint)."""
    root = tmp_path_factory.mktemp("predict")
    fixture.write(root)
    cfg = {"data": {"name": "files", "params": {"root": str(root), **PARAMS}, "batch_size": 16,
                    "groups": {"site": ["site", "site_cat"], "climate": ["climate"], "patch": ["patch"],
                               "photos": ["photos"]}},
           "model": {"d_model": 16, "depth": 1, "heads": 2, "n_frequencies": 8},
           "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu"},
           "out_dir": str(root / "run")}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--config", str(root / "cfg.yaml")]) == 0
    return root, root / "run" / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def predictor(run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor.from_checkpoint(run[1])


def test_predict_sites_csv_probabilities_and_modalities(run, capsys):
    root, ckpt = run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--checkpoint", str(ckpt), "--sites", str(root / "sites.csv")]) == 0
    assert "80 sites ->" in capsys.readouterr().out
    table = pd.read_csv(root / "run" / "predictions" / "sites.csv")
    assert list(table.columns[:6]) == ["site_id", "lon", "lat", "sp_a", "sp_b", "sp_c"]   # the table's own names
    probs = table[["sp_a", "sp_b", "sp_c"]].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    # site 1 lies outside both rasters: no climate, no patch; sites 5 and 6 have no photo
    assert table.loc[1, "present_climate"] == 0 and table.loc[1, "present_patch"] == 0
    assert set(table.loc[1, "modalities"].split("+")) == {"site", "photos"}
    assert table.loc[5, "present_photos"] == 0 and "photos" not in table.loc[5, "modalities"]
    assert table.loc[10, "present_site"] == 1.0


def test_predict_sites_with_chosen_modalities_and_unseen_level(run, predictor, tmp_path):
    root, _ = run
    sites = pd.read_csv(root / "sites.csv").head(6)
    sites.loc[0, "habitat"] = "quarry"                       # a level never seen in training
    sites.to_csv(tmp_path / "new.csv", index=False)
    with pytest.warns(UserWarning, match=r"new\.csv: column 'habitat' has 1 value\(s\) with a level unseen in "
                                         r"training \(e\.g\. \['quarry'\]\); those tokens are hidden"):
        full = predictor.predict_sites(tmp_path / "new.csv")
    assert full.loc[0, "present_site"] == 0.5                # ph is there, habitat hidden
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        only = predictor.predict_sites(tmp_path / "new.csv", modalities=["site"])
    assert (only[["present_climate", "present_patch", "present_photos"]] == 0).all().all()
    assert set(only["modalities"]) <= {"site", "none"}
    assert not np.allclose(only[["sp_a"]].to_numpy(), full[["sp_a"]].to_numpy())
    with pytest.raises(InvalidParameterError, match=r"Unknown modality \['soil'\]; valid names are \['climate', "):
        predictor.predict_sites(tmp_path / "new.csv", modalities=["soil"])


def test_a_site_with_no_data_at_all_is_flagged(run, predictor, tmp_path, capsys):
    """Before (issue 14): a site outside every raster, with no table values or photo, was NaN in every species
    column with only a count in the log."""
    root, ckpt = run
    sites = pd.read_csv(root / "sites.csv").head(8)
    sites.loc[[1, 5], ["habitat", "ph"]] = np.nan      # site 1 lies outside both rasters; site 5 has no photo
    sites.loc[5, ["lon", "lat"]] = [3.5, 45.5]
    sites.to_csv(tmp_path / "new.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--checkpoint", str(ckpt), "--sites", str(tmp_path / "new.csv"),
                     "--out", str(tmp_path / "p.csv")]) == 0
    assert ("1 site(s) had no data in any modality (outside every raster, no table row or image): flagged "
            "no_data") in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["no_data"].tolist() == [False] * 5 + [True] + [False] * 2
    assert table.loc[5, ["sp_a", "sp_b", "sp_c"]].isna().all() and table.loc[1, ["sp_a"]].notna().all()


def test_large_tokens_are_read_in_smaller_chunks(run, predictor, monkeypatch):
    root, _ = run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = predictor.predict_sites(root / "sites.csv")
        per_point = 16 * sum(s.n_tokens * s.token_size for s in predictor.model.specs)
        monkeypatch.setattr("miam.predict.TOKEN_BYTES", 7 * per_point)
        assert predictor.chunk(1 << 16) == 7
        chunked = predictor.predict_sites(root / "sites.csv")
    pd.testing.assert_frame_equal(chunked, whole, atol=1e-6)


def test_predict_grid_keeps_the_input_grid_and_matches_point_predictions(run, predictor, tmp_path):
    root, _ = run
    for name in ("bio.tif", "elev.tif"):
        out = tmp_path / f"on_{name}"
        predictor.predict_grid(Grid.of_raster(root / name), out, progress=False)
        with rasterio.open(root / name) as src, rasterio.open(out) as got:
            assert got.transform == src.transform and got.crs == src.crs
            assert (got.width, got.height) == (src.width, src.height)
            assert got.descriptions == ("sp_a", "sp_b", "sp_c")
            assert json.loads(got.tags()["outputs"]) == ["sp_a", "sp_b", "sp_c"]
    with rasterio.open(tmp_path / "on_bio.tif") as got:
        grid = got.read()
    # a grid cell is predicted exactly as a point at the cell's centre with no site id
    rows, cols = np.array([5, 40, 77, 99]), np.array([5, 12, 60, 0])
    lon, lat = fixture.pixel_centre(rows, cols)
    probs, _ = predictor.predict_tokens(predictor.data.encode(Sites(None, lon, lat, "EPSG:4326")),
                                        predictor.mask(None))
    np.testing.assert_allclose(grid[:, rows, cols].T, probs, atol=1e-5)
    # windowed writing gives the same raster as one window
    small = predictor.predict_grid(Grid.of_raster(root / "bio.tif"), tmp_path / "small.tif", window_pixels=700,
                                   progress=False)
    with rasterio.open(tmp_path / "small.tif") as got:
        np.testing.assert_allclose(got.read(), grid, atol=1e-6)
        assert got.profile["blockysize"] == 7
    assert small["pixels"] == 10_000


def test_grid_nodata_where_the_chosen_modalities_have_no_data(run, predictor, tmp_path):
    root, _ = run
    out = tmp_path / "climate_only.tif"
    summary = predictor.predict_grid(Grid.of_raster(root / "bio.tif"), out, species=["sp_b"],
                                     modalities=["climate"], progress=False)
    with rasterio.open(out) as got:
        band = got.read(1)
        assert got.count == 1 and got.descriptions == ("sp_b",)
    assert np.isnan(band[:10, :10]).all() and np.isfinite(band[10:, :]).all()   # bio.tif's nodata corner
    assert summary["share_with_data"] == pytest.approx(0.99)


def test_bbox_grid_top_k_and_richness(run, predictor, tmp_path):
    grid = Grid.of_bbox((2.2, 45.2, 2.5, 45.4), 0.01, "EPSG:4326")
    assert (grid.width, grid.height) == (30, 20)
    predictor.predict_grid(grid, tmp_path / "top.tif", top_k=2, progress=False)
    predictor.predict_grid(grid, tmp_path / "rich.tif", richness=True, progress=False)
    predictor.predict_grid(grid, tmp_path / "all.tif", progress=False)
    with rasterio.open(tmp_path / "top.tif") as t, rasterio.open(tmp_path / "rich.tif") as r, \
            rasterio.open(tmp_path / "all.tif") as a:
        top, rich, probs = t.read(), r.read(1), a.read()
        assert t.descriptions == ("top1", "top2") and t.dtypes[0] == "int16"
        assert a.transform.c == pytest.approx(2.2) and a.transform.f == pytest.approx(45.4)
    np.testing.assert_array_equal(top[0], probs.argmax(0))
    np.testing.assert_allclose(rich, probs.sum(0), atol=1e-5)
    with pytest.raises(InvalidParameterError, match=r"Unknown species \['sp_z'\]; the model predicts \['sp_a'"):
        predictor.predict_grid(grid, tmp_path / "x.tif", species=["sp_z"])


def test_cli_bbox_source_and_modalities(run, tmp_path, capsys):
    root, ckpt = run
    out = tmp_path / "box.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--checkpoint", str(ckpt), "--bbox", "2.2", "45.2", "2.5", "45.4", "--resolution",
                     "0.01", "--richness", "--modalities", "climate", "--no-progress", "--out", str(out),
                     "--source", f"climate={root / 'bio.tif'},{root / 'elev.tif'}"]) == 0
    assert "30 x 20 pixels, 1 band(s) (richness)" in capsys.readouterr().out
    with rasterio.open(out) as got:
        assert got.crs.to_epsg() == 4326 and got.tags()["modalities"] == "climate"
    assert main(["predict", "--checkpoint", str(ckpt), "--bbox", "0", "0", "1", "1"]) == 2
    assert "--bbox needs --resolution" in capsys.readouterr().err


def test_future_rasters_replace_the_training_ones(run, predictor, tmp_path):
    root, _ = run
    with rasterio.open(root / "bio.tif") as src:
        profile, data = src.profile, src.read()
    data = np.where(data == fixture.BIO_NODATA, data, data + 3000)          # a warmer future
    with rasterio.open(tmp_path / "bio_2070.tif", "w", **profile) as dst:
        dst.write(data)
    grid = Grid.of_raster(root / "bio.tif")
    now = tmp_path / "now.tif"
    future = tmp_path / "future.tif"
    predictor.predict_grid(grid, now, modalities=["climate"], progress=False)
    predictor.predict_grid(grid, future, modalities=["climate"], progress=False,
                           sources={"climate": [str(tmp_path / "bio_2070.tif"), str(root / "elev.tif")]})
    with rasterio.open(now) as a, rasterio.open(future) as b:
        assert not np.allclose(a.read(), b.read(), equal_nan=True)
    with pytest.raises(ConfigError, match=r"unknown source\(s\) \['clim'\]; valid names are \['site', 'climate'"):
        predictor.data.encode(Sites(None, np.array([2.5]), np.array([45.5]), "EPSG:4326"), {"clim": "x.tif"})


def test_map_png_with_presences_marked_by_split(run, capsys, monkeypatch):
    """Before (issue 14): every presence was labelled "presences (training)", validation and test included."""
    import matplotlib.figure

    root, ckpt = run
    legends = []
    save = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--checkpoint", str(ckpt), "--grid", "climate", "--no-progress"]) == 0
        assert main(["map", str(root / "run" / "predictions" / "grid.tif"), "--species", "sp_a",
                     "--config", str(root / "run" / "config.yaml")]) == 0
    out = capsys.readouterr().out
    sites = pd.read_csv(root / "sites.csv")
    n = (sites["sp_a"] > 0).groupby(sites["split"]).sum()
    assert f"with presences: {n['train']} training, {n['val']} validation, {n['test']} test" in out
    assert legends == [["presences (training)", "presences (validation)", "presences (test)"]]
    png = root / "run" / "predictions" / "grid_sp_a.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["map", str(root / "run" / "predictions" / "grid.tif"), "--species", "sp_q"]) == 2
    assert "has no band 'sp_q'; its bands are ['sp_a', 'sp_b', 'sp_c']" in capsys.readouterr().err


def test_checkpoint_and_data_must_agree(run, tmp_path, capsys):
    root, ckpt = run
    cfg = yaml.safe_load((root / "run" / "config.yaml").read_text())
    cfg["data"]["params"]["rasters"] = cfg["data"]["params"]["rasters"][:1]
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match=r"does not match the data that .*changed\.yaml describes now "
                                              r"\(modalities .* in the checkpoint"):
            Predictor.from_checkpoint(ckpt, tmp_path / "changed.yaml")
    cfg["data"] = {"name": "synthetic", "params": {"n_sites": 100}}
    (tmp_path / "synthetic.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["predict", "--checkpoint", str(ckpt), "--config", str(tmp_path / "synthetic.yaml"),
                 "--sites", "x.csv"]) == 2
    assert "need a run trained on a 'files' dataset" in capsys.readouterr().err
