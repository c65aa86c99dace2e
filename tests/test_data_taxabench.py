"""TaxaBench-8k: a tiny hub folder -> miam prepare -> cached dataset (embeddings and raw files) -> training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from data import taxabench as fixture
from data import tiny_run
from miam.cli import main
from miam.data.benchmarks.taxabench import EMBEDDINGS, load_taxabench, log_mel_tokens
from miam.errors import DataFormatError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("TaxaBench-8k")
    return root, fixture.write(root, seed=0)


@pytest.fixture(scope="module")
def ds(raw):
    root, _ = raw
    assert main(["prepare", "taxabench", "--root", str(root), "--no-progress"]) == 0
    return load_taxabench(root)


def test_embeddings_one_token_per_modality(ds, raw):
    _, truth = raw
    assert [(s.name, s.kind, s.n_tokens, s.token_shape) for s in ds.specs] == [
        (m, "embedding", 1, (512,)) for m in ("location", "env", "image", "audio", "satellite")]
    assert ds.task.kind == "multiclass" and ds.task.output_names == tuple(sorted(fixture.SPECIES))
    assert fixture.RARE not in ds.task.output_names and len(ds) == 5 * 12
    order = {int(i): k for k, i in enumerate(truth["ids"])}
    for row in (0, 7):
        k = order[int(ds.ids[row])]
        np.testing.assert_allclose(ds.tokens["image"][row, 0], truth["embeddings"]["img"][k].numpy(), rtol=1e-6)
        assert ds.task.output_names[int(ds.target[row])] == truth["species"][int(ds.ids[row])]
    zero = list(ds.ids).index(truth["zero_audio"])
    assert not ds.present["audio"][zero].any() and ds.present["image"][zero].all()
    assert ds.info["report"]["hidden_tokens"]["audio"] == 1


def test_stratified_split_keeps_every_species_everywhere(ds):
    train, val, test = (set(ds.splits[k].tolist()) for k in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == len(ds)
    for part in ("train", "val", "test"):
        assert set(np.asarray(ds.target)[ds.splits[part]].tolist()) == set(range(5))


def test_short_real_training_run(ds, raw, tmp_path):
    root, _ = raw
    result = tiny_run("taxabench", {"root": str(root)}, tmp_path / "run")
    assert set(result.trajectory()["modality"]) == {"location", "env", "image", "audio", "satellite"}


def test_embeddings_split_into_several_tokens_and_tensor_format(raw, tmp_path):
    root, truth = raw
    ds = load_taxabench(root, embedding_tokens=4, cache_dir=tmp_path / "a")
    assert ds.specs[2].n_tokens == 4 and ds.specs[2].token_names[1] == "image[128:256]"
    stacked = torch.stack([truth["embeddings"][k] for k in ("loc", "env", "img", "aud", "sat")], dim=1)
    other = tmp_path / "tensor_form"
    other.mkdir()
    pd.read_csv(root / "test_df.csv").to_csv(other / "test_df.csv", index=False)
    position = {int(i): k for k, i in enumerate(truth["ids"])}
    by_row = stacked[[position[int(i)] for i in pd.read_csv(other / "test_df.csv")["id"]]]  # csv order, no ids
    torch.save(by_row, other / EMBEDDINGS)
    again = load_taxabench(other)
    np.testing.assert_allclose(again.tokens["image"][:, 0], ds.tokens["image"].reshape(len(ds), -1), rtol=1e-6)
    torch.save({"location": by_row[:, 0]}, other / EMBEDDINGS)
    with pytest.raises(DataFormatError, match=r"contains 'env'.*keys \['location'\]"):
        load_taxabench(other, cache_dir=tmp_path / "b")


def test_raw_files_decode_and_hide_what_is_missing(raw, tmp_path):
    root, truth = raw
    bad = truth["bad_audio"]
    with pytest.warns(UserWarning, match=rf"{bad}\.m4a \(id {bad}\).*FFmpeg cannot decode it"):
        ds = load_taxabench(root, features="raw", cache_dir=tmp_path / "raw")
    kinds = {s.name: (s.kind, s.n_tokens, s.token_shape) for s in ds.specs}
    assert kinds == {"location": ("coords", 1, (2,)), "env": ("tabular", 20, (1,)),
                     "image": ("image", 16, (3, 16, 16)), "audio": ("audio", 20, (1, 32, 16)),
                     "satellite": ("image", 16, (3, 16, 16))}
    row = {int(i): k for k, i in enumerate(ds.ids)}
    assert not ds.present["image"][row[truth["no_image"]]].any()
    assert not ds.present["audio"][row[bad]].any()
    # the AAC recording is decoded: its 3 s fill 5 tokens, loudest in the mel band of its 440 Hz tone
    tone, tone_present = log_mel_tokens(fixture.TONE, 16_000)
    m4a = row[truth["m4a"]]
    np.testing.assert_array_equal(ds.present["audio"][m4a], tone_present)
    band = ds.tokens["audio"][m4a][:5, 0].mean(axis=(0, 2))
    assert band.argmax() == tone[:5, 0].mean(axis=(0, 2)).argmax()
    np.testing.assert_allclose(band, tone[:5, 0].mean(axis=(0, 2)), atol=0.3)
    assert not ds.present["env"][row[truth["at_sea"]]].any()
    assert ds.present["satellite"].all() and ds.present["location"].all()
    rep = ds.info["report"]
    assert rep["missing_files"] == {"image": 1} and rep["corrupt_files"] == {"audio": 1}
    table = pd.read_csv(root / "test_df.csv").set_index("id")
    i = int(ds.ids[0])
    np.testing.assert_allclose(ds.tokens["location"][0, 0], table.loc[i, ["longitude", "latitude"]].to_numpy(),
                               rtol=1e-6)
    ds.__getitems__(list(range(8))).validate(ds.specs, ds.task)


def test_log_mel_tokens_hide_frames_past_the_clip():
    tokens, present = log_mel_tokens(np.zeros(8000 * 2, dtype=np.float32) + 0.1, 8000)
    assert tokens.shape == (20, 1, 32, 16) and present.sum() == 3 and np.isfinite(tokens).all()


def test_table_missing_species_column(tmp_path):
    root = tmp_path / "tb"
    fixture.write(root, seed=1)
    pd.read_csv(root / "test_df.csv").drop(columns=["scientific_name"]).to_csv(root / "test_df.csv", index=False)
    with pytest.raises(DataFormatError, match=r"test_df\.csv: missing column\(s\) \['scientific_name'\]"):
        load_taxabench(root)
