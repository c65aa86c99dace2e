"""Targets and splits of the ``files`` dataset: occurrences, labels, presence-only with background
points, spatial / column / random splits."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import rasterio

from data import files as fixture
from miam.data.files.io import Sites
from miam.data.files.loader import FilesData, coords_km

RASTERS = [{"name": "climate", "paths": ["bio.tif"]}]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    fixture.write(root, n_sites=60)
    return root


def build(root, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FilesData(root=str(root), progress=False, **params).build()


def write_presences(root):
    """Records at known pixels of bio.tif: two in one cell, one outside, one in the nodata corner."""
    rows = np.array([20, 20, 30, 40, 50, 60, 70, 5, 25, 35, 45, 55])
    cols = np.array([20, 20, 30, 40, 50, 60, 70, 5, 75, 65, 55, 45])
    lon, lat = fixture.pixel_centre(rows + 0.2, cols - 0.3)   # anywhere inside the cell
    species = ["a", "b", "a", "a", "b", "a", "b", "a", "b", "b", "a", "b"]
    df = pd.DataFrame({"decimalLongitude": np.r_[lon, 9.0], "decimalLatitude": np.r_[lat, 45.5],
                       "species": species + ["a"]})
    df.to_csv(root / "gbif.csv", index=False)
    return rows, cols


def test_presence_only_background_inside_valid_area_never_on_presence_cells(root):
    rows, cols = write_presences(root)
    ds = build(root, targets={"presence_only": {"path": "gbif.csv", "background": {"count": 300, "seed": 1}}},
               rasters=RASTERS + [{"name": "elev", "paths": ["elev.tif"]}], split={"method": "random"})
    counts = ds.info["background"]
    assert counts == {**counts, "presence_records": 13, "records_outside": 1, "presence_cells": 11,
                      "requested": 300, "drawn": 300}
    assert any("background: 300 of 300 points drawn" in n for n in ds.info["report"]["notes"])
    bg = ds.info["is_background"]
    assert bg.sum() == 300 and (~bg).sum() == 11
    assert (ds.target[bg] == 0).all() and (ds.target[~bg].sum(1) >= 1).all()
    assert ds.target[~bg].sum(0).tolist() == [6, 6]               # a: 6 cells, b: 6 (one cell holds a and b)
    # every background point has data in every layer of both rasters (bio.tif and the UTM elev.tif)
    assert ds.present["climate"][bg].all() and ds.present["elev"][bg].all()
    with rasterio.open(root / "bio.tif") as src:
        r, c = rasterio.transform.rowcol(src.transform, ds.coords[:, 0], ds.coords[:, 1])
    cell = np.asarray(r) * 100 + np.asarray(c)
    presence_cells = set((rows * 100 + cols).tolist())
    assert set(cell[~bg].tolist()) == presence_cells
    assert not set(cell[bg].tolist()) & presence_cells
    assert len(set(cell[bg].tolist())) == 300                      # no cell drawn twice
    # the same seed draws the same points
    again = build(root, targets={"presence_only": {"path": "gbif.csv", "background": {"count": 300, "seed": 1}}},
                  rasters=RASTERS + [{"name": "elev", "paths": ["elev.tif"]}], split={"method": "random"})
    np.testing.assert_array_equal(again.coords, ds.coords)


def test_background_exhausts_the_valid_area_and_says_so(root):
    write_presences(root)
    params = {"targets": {"presence_only": {"path": "gbif.csv", "background": {"count": 20_000}}},
              "rasters": RASTERS, "split": {"method": "random"}}
    with pytest.warns(UserWarning, match=r"Background: drew 9890 of the 20000 points asked for"):
        ds = FilesData(root=str(root), progress=False, **params).build()
    # 100 x 100 cells, 100 on nodata, 11 holding presences (one of them on nodata): 9890 left
    assert ds.info["background"]["drawn"] == 9890
    assert ds.present["climate"][ds.info["is_background"]].all()


def test_background_may_use_presence_cells_when_allowed(root):
    write_presences(root)
    ds = build(root, targets={"presence_only": {"path": "gbif.csv", "background": {
        "count": 9900, "exclude_presence_cells": False}}}, rasters=RASTERS, split={"method": "random"})
    assert ds.info["background"]["drawn"] == 9900                 # every valid cell, presence cells included


def test_occurrence_table_and_min_presences(root):
    sites = pd.read_csv(root / "sites.csv")
    ids = sites.site_id
    occ = pd.DataFrame({"site_id": [ids[0], ids[0], ids[3], "ZZ"] + list(ids[10:30]),
                        "taxon": ["Quercus", "Fagus", "Quercus", "Fagus"] + ["Abies"] * 20})
    occ.loc[len(occ)] = [sites.site_id[5], "Rarus"]
    occ.to_csv(root / "occ.csv", index=False)
    with pytest.warns(UserWarning, match=r"occ\.csv: 1 of its 24 site ids match no site"):
        ds = FilesData(root=str(root), progress=False, sites={"path": "sites.csv"}, rasters=RASTERS,
                       targets={"occurrences": {"path": "occ.csv", "species": "taxon"}, "min_presences": 2},
                       split={"method": "column"}).build()
    assert ds.task.output_names == ("Abies", "Quercus")           # Fagus (1 site) and Rarus dropped
    assert ds.target[0].tolist() == [0, 1] and ds.target[3].tolist() == [0, 1]
    assert ds.target[10:30, 0].all() and ds.target[:, 0].sum() == 20
    assert any("2 species with fewer than 2 presence(s) dropped:" in n for n in ds.info["report"]["notes"])


def test_label_column_is_a_multiclass_task(root):
    ds = build(root, sites={"path": "sites.csv"}, targets={"label": "split"}, rasters=RASTERS,
               split={"method": "random", "seed": 3})
    assert ds.task.kind == "multiclass" and ds.task.output_names == ("test", "train", "val")
    truth = pd.read_csv(root / "sites.csv")["split"].map({"test": 0, "train": 1, "val": 2}).to_numpy()
    np.testing.assert_array_equal(ds.target, truth)


def test_splits_spatial_column_random(root):
    common = {"sites": {"path": "sites.csv"}, "targets": {"species": ["sp_*"]}, "rasters": RASTERS}
    spatial = build(root, **common, split={"method": "spatial", "block_km": 20, "seed": 0})
    blocks = {}
    xy = coords_km(Sites(None, spatial.coords[:, 0], spatial.coords[:, 1], "EPSG:4326"))
    cell = [tuple(v) for v in np.floor(xy / 20).astype(int)]
    for name, idx in spatial.splits.items():
        for i in idx:
            blocks.setdefault(cell[i], set()).add(name)
    assert all(len(v) == 1 for v in blocks.values())               # no block is shared by two splits
    column = build(root, **common, split={"method": "column"})
    table = pd.read_csv(root / "sites.csv")
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(column.splits[name], np.flatnonzero(table.split == name))
    rnd = build(root, **common, split={"method": "random", "fractions": [0.5, 0.25, 0.25], "seed": 4})
    assert [len(rnd.splits[k]) for k in ("train", "val", "test")] == [30, 15, 15]
    assert sorted(np.concatenate(list(rnd.splits.values())).tolist()) == list(range(60))
