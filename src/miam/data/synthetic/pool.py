"""The ``synthetic_pool`` dataset: few labelled sites and many unlabelled ones from one landscape,
so pretraining can be measured against the truth the generator keeps."""

from __future__ import annotations

from typing import Any

import numpy as np

from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.unlabelled import from_dataset
from miam.data.synthetic.generator import make_dataset
from miam.errors import InvalidParameterError


def synthetic_pool(n_labelled: int = 1000, n_unlabelled: int = 20_000, seed: int = 0, val_fraction: float = 0.1,
                   n_test: int | None = None, **params: Any) -> MultimodalDataset:
    """The ``synthetic_pool`` dataset of configs: a few labelled sites, many unlabelled ones in
    ``info["unlabelled"]`` (an :class:`UnlabelledDataset`), drawn from one ``make_dataset(seed, ...)``.

    The landscape (fields, species responses, spatial blocks) is the same for both parts.
    Labelled: ``n_labelled`` training sites drawn from the training blocks, validation sites in
    the proportion of the split fractions (at least 20), and the test split (``n_test`` of it,
    default all). Unlabelled: ``n_unlabelled`` other training-block sites; their labels are
    dropped here. Validation and test sites never enter the pool. ``miam pretrain`` with
    ``pretrain.source: {kind: dataset}`` reads the pool and the labelled training inputs.

    ``params`` go to :func:`miam.data.synthetic.make_dataset` (not ``n_sites``).
    """
    fractions = params.get("split_fractions", (0.7, 0.15, 0.15))
    n_sites = int(np.ceil((n_labelled + n_unlabelled) / fractions[0] * 1.05))
    ds = make_dataset(seed=seed, n_sites=n_sites, **params)
    rng = np.random.default_rng([seed, n_labelled, n_unlabelled])
    train = rng.permutation(ds.splits["train"])
    if len(train) < n_labelled + n_unlabelled:
        raise InvalidParameterError(f"synthetic_pool: the training blocks hold {len(train)} sites, fewer than "
                                    f"{n_labelled} + {n_unlabelled}; lower n_unlabelled.")
    n_val = max(20, int(round(n_labelled * fractions[1] / fractions[0])))
    val = rng.permutation(ds.splits["val"])[:n_val]
    test = ds.splits["test"] if n_test is None else rng.permutation(ds.splits["test"])[:n_test]
    rows = np.concatenate([np.sort(train[:n_labelled]), np.sort(val), np.sort(test)])
    splits = {"train": np.arange(n_labelled), "val": n_labelled + np.arange(len(val)),
              "test": n_labelled + len(val) + np.arange(len(test))}
    pool = from_dataset(ds, np.sort(train[n_labelled:n_labelled + n_unlabelled]), val_fraction, seed,
                        source=f"{n_unlabelled} unlabelled sites of the synthetic landscape (seed {seed})")
    return MultimodalDataset({m: ds.tokens[m][rows] for m in ds.modalities}, ds.target[rows], ds.specs, ds.task,
                             present={m: ds.present[m][rows] for m in ds.modalities}, ids=ds.ids[rows],
                             coords=ds.coords[rows], splits=splits, info={**ds.info, "unlabelled": pool})
