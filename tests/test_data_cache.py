"""The pieces every benchmark shares: the download ladder, the prepare CLI's errors, split helpers."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from data import satbird as fixture
from miam.cli import main
from miam.data.benchmarks._download import ChecksumError, RemoteFile, sha256sum, verify
from miam.data.benchmarks.satbird import load_satbird
from miam.data.contract.splits import stratified_split
from miam.errors import DatasetNotFoundError, InvalidParameterError


@pytest.fixture()
def archive(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    path = served / "bench.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("bench/table.csv", "id,x\n1,2\n")
    return path


def test_ladder_downloads_checks_and_extracts(archive, tmp_path):
    root = tmp_path / "root"
    good = RemoteFile(archive.as_uri(), "bench.zip", sha256sum(archive), extract=True)
    with pytest.raises(DatasetNotFoundError, match=r"bench/table\.csv.*root=.*download=True"):
        verify("Bench", root, ["bench/table.csv"], [good])
    verify("Bench", root, ["bench/table.csv"], [good], download=True, checksum=True)
    assert (root / "bench" / "table.csv").read_text().startswith("id,x")
    verify("Bench", root, ["bench/table.csv"], [good])          # present: nothing to do


def test_ladder_refuses_a_wrong_checksum_and_reports_failed_fetches(archive, tmp_path):
    bad = RemoteFile(archive.as_uri(), "bench.zip", "0" * 64, extract=True)
    with pytest.raises(ChecksumError, match="bench.zip has sha256 .* expected 0000"):
        verify("Bench", tmp_path / "a", ["bench/table.csv"], [bad], download=True, checksum=True)
    gone = RemoteFile((tmp_path / "nowhere.zip").as_uri(), "nowhere.zip")
    with pytest.raises(DatasetNotFoundError, match=r"Downloading .*nowhere\.zip failed.*by hand"):
        verify("Bench", tmp_path / "b", ["x.csv"], [gone], download=True)


def test_prepare_cli_rejects_unknown_options(tmp_path, capsys):
    root = tmp_path / "USA_summer"
    fixture.write(root, n_hotspots=12)
    assert main(["prepare", "satbird", "--root", str(root), "--set", "crops=32"]) == 2
    assert "unknown option(s) ['crops'] for satbird; valid options are ['root', 'modalities', 'crop'" in \
        capsys.readouterr().err


def test_prepare_cli_takes_its_benchmarks_from_the_registry(tmp_path, capsys):
    assert main(["prepare", "synthetic", "--root", str(tmp_path)]) == 2
    assert "'synthetic' has no published files to prepare; the benchmarks that do are ['geoplant', 'satbird', " \
           "'taxabench']" in capsys.readouterr().err


def test_split_names_are_checked(tmp_path):
    root = tmp_path / "USA_summer"
    fixture.write(root, n_hotspots=12)
    with pytest.warns(UserWarning), pytest.raises(InvalidParameterError, match="'split' parameter"):
        load_satbird(root, split="random")
    with pytest.raises(InvalidParameterError, match="stratified split needs a multiclass"):
        load_satbird(root, split="stratified")


def test_stratified_split_is_per_class_and_reproducible():
    labels = np.random.default_rng(0).integers(0, 4, 400)
    a = stratified_split(labels, (0.8, 0.1, 0.1), ("train", "val", "test"), seed=3)
    b = stratified_split(labels, (0.8, 0.1, 0.1), ("train", "val", "test"), seed=3)
    assert all((a[k] == b[k]).all() for k in a)
    for c in range(4):
        share = np.isin(a["train"], np.flatnonzero(labels == c)).sum() / (labels == c).sum()
        assert 0.75 <= share <= 0.85
