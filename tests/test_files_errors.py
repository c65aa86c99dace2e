"""Bad input to the ``files`` dataset gets an error that names the file, the column, the key or the CRS."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from data import files as fixture
from miam.cli import main
from miam.data.files.loader import FilesData
from miam.data.registry import build_dataset
from miam.errors import ConfigError, DataFormatError, DatasetNotFoundError

BASE = {"sites": {"path": "sites.csv"}, "targets": {"species": ["sp_*"]},
        "rasters": [{"name": "climate", "paths": ["bio.tif"]}], "split": {"method": "column"}, "progress": False}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    fixture.write(root, n_sites=30)
    return root


def build(root, **changes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FilesData(root=str(root), **{**BASE, **changes}).build()


def sites_copy(root, tmp_path, edit):
    df = pd.read_csv(root / "sites.csv")
    df = edit(df)
    path = tmp_path / "sites.csv"
    df.to_csv(path, index=False)
    return {"path": str(path)}


def test_missing_id_column(root):
    with pytest.raises(DataFormatError, match=r"sites\.csv: no id column 'plot'; its columns are \['site_id', 'lon'"):
        build(root, sites={"path": "sites.csv", "id": "plot"})


def test_duplicated_site_ids(root, tmp_path):
    def dup(df):
        df.loc[2, "site_id"] = df.loc[1, "site_id"]
        return df

    with pytest.raises(DataFormatError, match=r"sites\.csv: duplicated site id 'S001' in column 'site_id' on "
                                              r"lines \[3, 4\] \(1 repeated ids\)"):
        build(root, sites=sites_copy(root, tmp_path, dup))


def test_table_whose_ids_match_no_site_and_partial_matches(root, tmp_path):
    pd.DataFrame({"site_id": ["X1", "X2", "X3"], "clay": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "soil.csv", index=False)
    with pytest.raises(DataFormatError, match=r"soil\.csv: none of its 3 site ids match a site of sites\.csv "
                                              r"\(0 of 3 matched"):
        build(root, tables=[{"name": "soil", "path": str(tmp_path / "soil.csv")}])
    with pytest.warns(UserWarning, match=r"soil\.parquet: 1 of its 30 site ids match no site of sites\.csv "
                                         r"\(e\.g\. \['ZZZ'\]\)"):
        FilesData(root=str(root), **{**BASE, "tables": [{"name": "soil", "path": "soil.parquet"}]}).build()


def test_occurrence_table_whose_ids_match_no_site(root, tmp_path):
    pd.DataFrame({"site_id": ["nope"], "species": ["a"]}).to_csv(tmp_path / "occ.csv", index=False)
    with pytest.raises(DataFormatError, match=r"occ\.csv: none of its 1 site ids match a site of sites\.csv"):
        build(root, targets={"occurrences": {"path": str(tmp_path / "occ.csv")}})


def test_raster_without_crs_while_points_have_one(root):
    with pytest.raises(DataFormatError, match=r"nocrs\.tif has no CRS but the points are in 'EPSG:4326'"):
        build(root, rasters=[{"name": "climate", "paths": ["nocrs.tif"]}])


def test_points_without_crs_while_the_raster_has_one(root):
    with pytest.raises(DataFormatError, match=r"The points have no CRS \(crs: null\) but .*bio\.tif is in "
                                              r"'EPSG:4326'"):
        build(root, sites={"path": "sites.csv", "crs": None})


def test_unknown_crs(root):
    with pytest.raises(DataFormatError, match=r"Unknown CRS 'EPSG:99999999'"):
        build(root, sites={"path": "sites.csv", "crs": "EPSG:99999999"})


@pytest.mark.parametrize("params, message", [
    ({"raster": []}, r"data\.params: unknown key\(s\) \['raster'\]; valid keys are \['root', 'sites', 'targets', "
                     r"'tables', 'timeseries', 'rasters', 'images', 'split', 'progress'\]"),
    ({"rasters": [{"name": "c", "paths": ["bio.tif"], "pach": 4}]},
     r"data\.params\.rasters\[0\]: unknown key\(s\) \['pach'\]; valid keys are \['name', 'paths', 'bands', 'patch'"),
    ({"sites": {"path": "sites.csv", "lat": "y"}},
     r"data\.params\.sites: unknown key\(s\) \['lat'\]; valid keys are \['path', 'id', 'x', 'y', 'crs'\]"),
    ({"targets": {"presence_only": {"path": "p.csv", "background": {"n": 5}}}},
     r"data\.params\.targets\.presence_only\.background: unknown key\(s\) \['n'\]; valid keys are \['count', "
     r"'seed', 'exclude_presence_cells', 'raster'\]"),
    ({"targets": {"species": ["sp_*"], "label": "habitat"}}, r"give exactly one of .* got \['species', 'label'\]"),
    ({"tables": [{"path": "soil.parquet"}]}, r"data\.params\.tables\[0\]: missing key\(s\) \['name'\]"),
    ({"split": {"method": "blocks"}}, r"split\.method must be one of \['spatial', 'column', 'random'\]"),
    ({"rasters": [{"name": "c", "paths": ["bio.tif"], "patch": 6, "token_size": 4}]},
     r"rasters\[0\]: patch=6 must be a multiple of token_size=4"),
    ({"rasters": [{"name": "a", "paths": ["bio.tif"]}, {"name": "a", "paths": ["elev.tif"]}]},
     r"modality name\(s\) \['a'\] used twice"),
])
def test_yaml_keys_and_choices(root, params, message):
    with pytest.raises(ConfigError, match=message):
        FilesData(root=str(root), **{**BASE, **params})


def test_unknown_key_through_miam_train(root, tmp_path, capsys):
    cfg = {"data": {"name": "files", "params": {**BASE, "root": str(root), "siets": {}}},
           "trainer": {"max_epochs": 1, "progress_bar": False}, "out_dir": str(tmp_path / "run")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 2
    assert "unknown key(s) ['siets']; valid keys are ['root', 'sites'" in capsys.readouterr().err


def test_bad_cells_and_columns_name_the_file_and_line(root, tmp_path):
    def nan_species(df):
        df["sp_b"] = df["sp_b"].astype(float)
        df.loc[4, "sp_b"] = np.nan
        return df

    with pytest.raises(DataFormatError, match=r"sites\.csv: species column 'sp_b' has 1 empty or non-numeric "
                                              r"cell\(s\) \(lines \[6\]\)"):
        build(root, sites=sites_copy(root, tmp_path, nan_species))
    with pytest.raises(DataFormatError, match=r"sites\.csv: data\.params\.tables\[0\] names column 'clay_\*', which "
                                              r"matches no column"):
        build(root, tables=[{"name": "t", "columns": ["clay_*"]}])
    with pytest.raises(DataFormatError, match=r"split column 'split' holds \['holdout'\] on lines \[2\]"):
        build(root, sites=sites_copy(root, tmp_path, lambda df: df.assign(split=["holdout"] + list(df.split[1:]))))
    with pytest.raises(DataFormatError, match=r"column 'lat' has 1 empty or non-numeric coordinate\(s\) "
                                              r"\(lines \[3\]\)"):
        build(root, sites=sites_copy(root, tmp_path, lambda df: df.assign(lat=[1.0, np.nan] + list(df.lat[2:]))))
    with pytest.raises(DataFormatError, match=r"bio\.tif: band\(s\) \[3\] do not exist; the file has bands 1\.\.2"):
        build(root, rasters=[{"name": "c", "paths": ["bio.tif"], "bands": [3]}])


def test_missing_files_name_the_path(root):
    with pytest.raises(DatasetNotFoundError, match=r"expected nothere\.tif under root="):
        build(root, rasters=[{"name": "c", "paths": ["nothere.tif"]}])
    with pytest.raises(DatasetNotFoundError, match=r"the image folder 'pics'"):
        build(root, images=[{"name": "p", "folder": "pics"}])
    with pytest.raises(DatasetNotFoundError, match=r"expected nosites\.csv"):
        build(root, sites={"path": "nosites.csv"})


def test_empty_split_and_text_in_a_numeric_column(root, tmp_path):
    with pytest.raises(DataFormatError, match=r"The spatial split leaves \['val', 'test'\] empty among 30 sites; "
                                              r"use smaller blocks \(split\.block_km is 5000"):
        build(root, split={"method": "spatial", "block_km": 5000})

    def typo(df):
        df["ph"] = df["ph"].astype(object)
        df.loc[5, "ph"] = "<5"
        return df

    with pytest.warns(UserWarning, match=r"column 'ph' is mostly numbers but has text cells \(e\.g\. '<5' on line 7\)"):
        FilesData(root=str(root), **{**BASE, "sites": sites_copy(root, tmp_path, typo),
                                     "tables": [{"name": "t", "columns": ["ph"]}]}).build()


def test_registry_builds_files(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("files", root=str(root), **BASE)
    assert ds.modalities == ["climate"] and ds.info["source"] == "miam.data.files"
