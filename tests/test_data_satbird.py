"""SatBird: a tiny USA_summer folder -> miam prepare -> cached dataset -> training on encounter rates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from data import satbird as fixture
from data import tiny_run
from miam.cli import main
from miam.data.benchmarks.satbird import load_satbird
from miam.data.contract.spec import TaskSpec
from miam.data.contract.splits import lonlat_to_km
from miam.errors import DataFormatError, DatasetNotFoundError
from miam.models.losses import TaskLoss
from miam.scores import EncounterTopK, encounter_scores, encounter_topk, make_metric, task_score

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("USA_summer")
    return root, fixture.write(root, seed=0)


@pytest.fixture(scope="module")
def ds(raw):
    root, _ = raw
    assert main(["prepare", "satbird", "--root", str(root), "--no-progress"]) == 0
    return load_satbird(root)


def satbird_topk(target, preds, k=None):
    """SatBird's CustomTopK / CustomTop10 loops (src/losses/metrics.py), as a reference."""
    scores = []
    for y, p in zip(target, preds):
        ki = int(torch.count_nonzero(y))
        if ki == 0:
            continue
        n_true = ki if k is None else min(ki, k)
        i_pred = torch.topk(p, ki if k is None else k).indices.tolist()
        i_true = torch.topk(y, n_true).indices.tolist()
        scores.append(len([j for j in i_pred if j in i_true]) / n_true)
    return float(np.mean(scores))


def test_encounter_topk_matches_satbird_loops():
    g = torch.Generator().manual_seed(0)
    y = torch.where(torch.rand(64, 40, generator=g) < 0.3, torch.rand(64, 40, generator=g), torch.zeros(()))
    y[3] = 0.0
    p = torch.rand(64, 40, generator=g)
    for k in (None, 10, 30):
        assert float(encounter_topk(p, y, k).mean()) == pytest.approx(satbird_topk(y, p, k))
    metric = EncounterTopK()
    metric.update(p[:20], y[:20])
    metric.update(p[20:], y[20:])
    assert float(metric.compute()) == pytest.approx(satbird_topk(y, p), rel=1e-6)
    assert metric.higher_is_better and isinstance(make_metric(TaskSpec("encounter", 40)), EncounterTopK)
    assert task_score(torch.logit(p), y, TaskSpec("encounter", 40)) == pytest.approx(satbird_topk(y, p), rel=1e-5)
    scores = encounter_scores(p, y)
    assert scores["mae"] == pytest.approx(float((p - y).abs().mean()))
    assert encounter_topk(y, y).min() == 1.0


def test_encounter_loss_is_satbird_ce():
    g = torch.Generator().manual_seed(1)
    y, logits = torch.rand(8, 5, generator=g), torch.randn(8, 5, generator=g)
    s = torch.sigmoid(logits)
    satbird = (-y * torch.log(s + 1e-7) - (1 - y) * torch.log(1 - s + 1e-7)).mean()
    assert float(TaskLoss("encounter")(logits, y)) == pytest.approx(float(satbird), rel=1e-4)


def test_official_splits_shapes_and_targets(ds, raw):
    _, truth = raw
    names = {"train": "train", "val": "valid", "test": "test"}
    for ours, theirs in names.items():
        want = set(truth["hotspots"][truth["split"] == theirs]) - {truth["no_target"]}
        assert set(ds.names[ds.splits[ours]]) == want
    assert ds.task.kind == "encounter" and ds.task.n_outputs == 20
    assert [(s.name, s.n_tokens, s.token_shape) for s in ds.specs] == [("sentinel", 16, (4, 16, 16)),
                                                                      ("env", 27, (1,))]
    assert ds.specs[1].token_names[0] == "bio_1" and ds.specs[1].token_names[-1] == "sndppt"
    for i, h in enumerate(ds.names[:5]):
        np.testing.assert_allclose(ds.target[i], truth["probs"][h], rtol=1e-6)
    batch = ds.__getitems__([0, 1])
    batch.validate(ds.specs, ds.task)


def test_image_is_transposed_reordered_and_centre_cropped(ds, raw):
    _, truth = raw
    row = {h: i for i, h in enumerate(ds.names)}
    for h, hwc in truth["images"].items():
        top, left = (hwc.shape[0] - 64) // 2, (hwc.shape[1] - 64) // 2
        crop = hwc[top:top + 64, left:left + 64][:, :, [2, 1, 0, 3]].transpose(2, 0, 1)
        first_patch = ds.tokens["sentinel"][row[h], 0]
        np.testing.assert_array_equal(first_patch, crop[:, :16, :16].astype(np.float32))


def test_missing_image_nan_pixels_and_missing_target(ds, raw):
    _, truth = raw
    row = {h: i for i, h in enumerate(ds.names)}
    assert truth["no_target"] not in row
    assert not ds.present["sentinel"][row[truth["no_image"]]].any()
    nan_tokens = ~ds.present["sentinel"][row[truth["nan_image"]]]
    assert 0 < nan_tokens.sum() < 16
    assert ds.info["report"]["missing_files"] == {"sentinel": 1}
    assert any("no targets/" in n and truth["no_target"] in n for n in ds.info["report"]["notes"])
    b = ds.__getitems__([row[truth["nan_image"]]])
    assert torch.isfinite(b.tokens["sentinel"]).all()


def test_short_real_training_run_on_encounter_rates(ds, raw, tmp_path):
    root, _ = raw
    result = tiny_run("satbird", {"root": str(root)}, tmp_path / "run")
    traj = result.trajectory()
    assert set(traj["modality"]) == {"sentinel", "env"} and traj["score"].between(0, 1).all()
    assert result.dataset.task.kind == "encounter"


def test_raster_env_and_spatial_split(raw, tmp_path):
    root, truth = raw
    ds = load_satbird(root, env_source="raster", split="spatial", cache_dir=tmp_path / "cache")
    h = ds.names[0]
    np.testing.assert_allclose(ds.tokens["env"][0, :, 0], truth["env"][h][:, 25, 25], rtol=1e-6)
    block = {k: {tuple(b) for b in np.floor(lonlat_to_km(ds.coords[v]) / 5.0).astype(int)}
             for k, v in ds.splits.items()}
    assert not (block["train"] & block["test"])


def test_corrupt_geotiff_warns_with_file_and_hotspot(tmp_path):
    root = tmp_path / "USA_summer"
    truth = fixture.write(root, seed=2)
    h = truth["hotspots"][10]
    tif = root / "images" / f"{h}.tif"
    tif.write_bytes(tif.read_bytes()[:100])
    with pytest.warns(UserWarning, match=rf"{h}\.tif \(hotspot {h}\).*hidden"):
        ds = load_satbird(root, modalities=["sentinel"])
    assert ds.info["report"]["corrupt_files"] == {"sentinel": 1}


def test_rate_outside_unit_interval_is_an_error(tmp_path):
    root = tmp_path / "USA_summer"
    truth = fixture.write(root, seed=3)
    h = truth["hotspots"][12]
    path = root / "targets" / f"{h}.json"
    target = json.loads(path.read_text())
    target["probs"][3] = 1.5
    path.write_text(json.dumps(target))
    with pytest.raises(DataFormatError, match=rf"{h}\.json: probs\[3\] = 1\.5"):
        load_satbird(root)


def test_split_file_without_hotspot_column(tmp_path):
    root = tmp_path / "USA_summer"
    fixture.write(root, seed=4)
    pd.read_csv(root / "valid_split.csv").rename(columns={"hotspot_id": "hotspot"}).to_csv(
        root / "valid_split.csv", index=False)
    with pytest.raises(DataFormatError, match=r"valid_split\.csv: missing column\(s\) \['hotspot_id'\]"):
        load_satbird(root)
    with pytest.raises(DatasetNotFoundError, match="Google Drive"):
        load_satbird(tmp_path / "elsewhere")
