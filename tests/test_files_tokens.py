"""The ``files`` dataset on real files: every token lands where it should, and hidden tokens are
exactly where data is missing or outside a raster."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from data import files as fixture
from miam.data.files.io import Sites
from miam.data.files.loader import FilesData

PARAMS = {
    "sites": {"path": "sites.csv"},
    "targets": {"species": ["sp_*"]},
    "tables": [{"name": "site", "columns": ["habitat", "ph"]}, {"name": "soil", "path": "soil.parquet"}],
    "timeseries": [{"name": "tas", "variables": {"tas": "tas_*"}, "segment": 3}],
    "rasters": [{"name": "climate", "paths": ["bio.tif", "elev.tif"]},
                {"name": "patch", "paths": ["bio.tif"], "patch": 4, "token_size": 2},
                {"name": "patch3", "paths": {"bio": "bio.tif"}, "bands": [1], "patch": 3}],
    "images": [{"name": "photos", "folder": "photos", "size": 16, "token_size": 8}],
    "split": {"method": "column"},
    "progress": False,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    truth = fixture.write(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = FilesData(root=str(root), **PARAMS)
        ds = data.build()
    return root, truth, data, ds


def raw_of(data, ds, name):
    """Tokens back in the files' units (undo the standardisation learned on train)."""
    enc = next(e for e in data.encoders if e.name == name)
    return ds.tokens[name] * enc.scaler.std_ + enc.scaler.mean_, ds.present[name]


def test_modalities_specs_and_report(built):
    _, _, _, ds = built
    kinds = {s.name: (s.kind, s.n_tokens, s.token_shape) for s in ds.specs}
    assert kinds == {"site": ("tabular", 1, (1,)), "site_cat": ("categorical", 1, (1,)),
                     "soil": ("tabular", 1, (1,)), "soil_cat": ("categorical", 1, (1,)),
                     "tas": ("timeseries", 4, (1, 3)), "climate": ("tabular", 3, (1,)),
                     "patch": ("image", 4, (2, 2, 2)), "patch3": ("image", 1, (1, 3, 3)),
                     "photos": ("image", 4, (3, 8, 8))}
    assert ds.spec("climate").token_names == ("bio1", "bio12", "elev")   # band descriptions, then the stem
    assert ds.spec("tas").token_names == ("1-3", "4-6", "7-9", "10-12")
    assert ds.task.output_names == ("sp_a", "sp_b", "sp_c")
    notes = " | ".join(ds.info["report"]["notes"])
    assert "bio.tif: 1 site(s) outside the raster, 1 on nodata/NaN" in notes
    assert "2 site(s) without an image file, 1 unreadable" in notes
    assert "soil.parquet: 1 site(s) without a row, 1 token(s) with empty cells" in notes
    assert ds.info["report"]["hidden_tokens"]["photos"] == 3 * 4


def test_raster_values_at_known_coordinates_in_two_crs(built):
    _, truth, data, ds = built
    values, present = raw_of(data, ds, "climate")
    r, c = truth["rows"], truth["cols"]
    ok = np.arange(len(r)) >= 2                     # site 0 on nodata, site 1 outside bio.tif
    np.testing.assert_allclose(values[ok, 0, 0], 1000 * r[ok] + c[ok], rtol=0, atol=0.05)
    np.testing.assert_allclose(values[ok, 1, 0], 1000 * r[ok] + c[ok] + 500_000, rtol=0, atol=0.5)
    assert present[ok, :2].all() and not present[:2, :2].any()
    # elev.tif is in UTM 31N with 500 m pixels: compute the expected pixel independently
    transform, h, w = fixture.elev_grid()
    x, y = Transformer.from_crs("EPSG:4326", fixture.UTM, always_xy=True).transform(
        truth["sites"]["lon"].to_numpy(), truth["sites"]["lat"].to_numpy())
    col = np.floor((x - transform.c) / transform.a).astype(int)
    row = np.floor((y - transform.f) / transform.e).astype(int)
    inside = (row >= 1) & (row < h) & (col >= 0) & (col < w)     # row 0 is NaN
    assert 10 < inside.sum() < len(row) - 10                      # some sites are west of elev.tif
    np.testing.assert_array_equal(present[:, 2], inside)
    np.testing.assert_allclose(values[inside, 2, 0], 1000 * row[inside] + col[inside], atol=0.05)
    assert (ds.tokens["climate"][~present] == 0).all()


def test_patches_are_centred_on_the_site(built):
    _, truth, data, ds = built
    values, present = raw_of(data, ds, "patch3")
    r, c = truth["rows"][2:], truth["cols"][2:]
    expected = 1000 * (r[:, None, None] + np.arange(-1, 2)[None, :, None]) + (c[:, None, None] + np.arange(-1, 2))
    np.testing.assert_allclose(values[2:, 0, 0], expected, atol=0.05)
    assert present[2:].all() and not present[:2].any()


def test_patch_tokens_hidden_exactly_outside_the_raster_and_on_nodata(built):
    _, _, data, _ = built
    # pixel centres: (0, 50) top edge, (50, 99) right edge, (10, 5) just below the nodata block, (11, 5) clear
    rows, cols = np.array([0, 50, 10, 11]), np.array([50, 99, 5, 5])
    lon, lat = fixture.pixel_centre(rows, cols)
    tok = data.encode(Sites(None, lon, lat, "EPSG:4326"))["patch"]       # 4x4 px -> 2x2 tokens of 2x2 px
    present = np.isfinite(tok).reshape(4, 4, -1).all(axis=2)
    # the window starts one pixel above/left of the site: rows r-1..r+2, cols c-1..c+2
    np.testing.assert_array_equal(present, [[False, False, True, True],    # row -1 is outside
                                            [True, False, True, False],    # col 100 is outside
                                            [False, False, True, True],    # row 9 is nodata
                                            [True, True, True, True]])


def test_tables_categorical_parquet_nan_and_train_only_statistics(built):
    _, truth, data, ds = built
    sites, soil = truth["sites"], truth["soil"]
    train = ds.splits["train"]
    cat = ds.tokens["site_cat"][:, 0, 0]
    levels = sorted(sites["habitat"].iloc[train].dropna().unique())
    expect = sites["habitat"].map({v: i for i, v in enumerate(levels)})
    known = expect.notna().to_numpy()
    np.testing.assert_array_equal(ds.present["site_cat"][:, 0], known)      # site 2 has no habitat
    np.testing.assert_array_equal(cat[known], expect[known].to_numpy())
    assert ds.spec("soil_cat").levels == (3,)                               # "silt" is only on an unmatched id
    np.testing.assert_array_equal(ds.present["site"][:, 0], sites["ph"].notna().to_numpy())
    assert abs(ds.tokens["site"][train, 0, 0][ds.present["site"][train, 0]].mean()) < 1e-5
    clay, present = raw_of(data, ds, "soil")
    row = pd.Index(soil["site_id"]).get_indexer(sites["site_id"])
    has = (row >= 0) & soil["clay"].reindex(row).notna().to_numpy()
    np.testing.assert_array_equal(present[:, 0], has)                       # S000 has no row, one clay is NaN
    np.testing.assert_allclose(clay[has, 0, 0], soil["clay"].to_numpy()[row[has]], atol=1e-4)


def test_time_series_segments_in_natural_order(built):
    _, truth, data, ds = built
    values, present = raw_of(data, ds, "tas")
    tas = truth["sites"][[f"tas_{m}" for m in range(1, 13)]].to_numpy()
    ok = np.isfinite(tas).reshape(len(tas), 4, 3).all(axis=2)
    np.testing.assert_array_equal(present, ok)
    assert present[4].tolist() == [True, True, False, True]                 # July is missing at site 4
    np.testing.assert_allclose(values[:, :, 0, :][ok], tas.reshape(len(tas), 4, 3)[ok], atol=1e-4)


def test_jpeg_tokens_and_missing_or_corrupt_files(built):
    _, truth, data, ds = built
    pixels, present = raw_of(data, ds, "photos")
    ids = truth["sites"]["site_id"].to_numpy()
    hidden = np.isin(ids, truth["no_photo"] + [truth["corrupt_photo"]])
    np.testing.assert_array_equal(present.all(axis=1), ~hidden)
    assert not present[hidden].any()
    colour = truth["colours"][~hidden] / 255.0                              # solid JPEGs: every pixel ~ colour
    mean_rgb = pixels[~hidden].mean(axis=(1, 3, 4))
    np.testing.assert_allclose(mean_rgb, colour, atol=4 / 255)


def test_parquet_sites_table_reads_like_the_csv(built, tmp_path):
    root, truth, _, ds = built
    truth["sites"].to_parquet(tmp_path / "sites.parquet", index=False)
    params = {**PARAMS, "sites": {"path": str(tmp_path / "sites.parquet")}, "tables": [], "timeseries": [],
              "images": [], "rasters": PARAMS["rasters"][:1]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = FilesData(root=str(root), **params).build()
    np.testing.assert_array_equal(other.present["climate"], ds.present["climate"])
    np.testing.assert_allclose(other.tokens["climate"], ds.tokens["climate"], atol=1e-6)
    np.testing.assert_array_equal(other.target, ds.target)
