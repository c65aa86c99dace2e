"""Synthetic landscapes shaped like the three benchmarks (shared/DATASETS.md), each with its truth.

``make_dataset(preset=...)`` (:mod:`miam.data.synthetic.generator`) builds them; a config asks for
one with ``data: {name: synthetic, params: {preset: geoplant}}``. They keep the embedded
data's hygiene: every token is an independent signal (its true share is well defined),
covariates are fields with a short correlation length (no modality stands in for the
location, hence for another's signal), and the species' logits add one standardised part
per modality, so the truth is the share of logit variance per modality and, within it, per
token, as realised by the drawn coefficients (``info["truth"]``).

* ``geoplant`` — GeoPlant scaled down: multi-label, 120 species, four modalities in the
  paper's M = 3 groups (tabular / time series / satellite):

  - ``env`` (tabular, 23 tokens): ``bio1``..``bio19``, ``elevation``, ``landcover``,
    ``soil_phh2o``, ``soil_clay``. Six carry linear signal; ``bio1`` alone is 46 % of it.
  - ``climate`` (timeseries, 7 tokens of tas, pr, tasmax, tasmin x 12 months, as GeoPlant's
    yearly cubes): ``2000-2002``..``2015-2017`` (three-year means, 2.5 % of the signal each)
    and ``2018`` (85 %: May-Aug temperature, Mar-Apr rain).
  - ``landsat`` (timeseries, 6 tokens ``2015``..``2020`` of 6 bands x 4 quarters): a noisy
    view of each year's greenness; 2017-2020 carry signal, 2018 most.
  - ``sentinel`` (image, a 3 x 3 grid ``r0c0``..``r2c2`` of 4-band 4 x 4 px patches): the
    texture amplitude of each patch; the centre patch ``r1c1`` is 55 % of the signal,
    its four edge neighbours the rest, the corners none.

  ``env`` is dominant (48.7 % of the logit variance) and linear: easy to learn.
* ``taxabench`` — TaxaBench-8k on the paper's embeddings, scaled down: multi-class, 30
  species, five modalities of one 32-d ``embedding`` token each (``location``, ``env``,
  ``image``, ``audio``, ``satellite``): a random linear mix of 6 latent factors plus noise.
  ``image`` is strong (51 % of the logit variance), ``satellite`` weak (5 %).
* ``satbird`` — SatBird scaled down: encounter rates of 80 species (the share of 5-49
  checklists per site that report each one), ``env`` (tabular, SatBird's 27 point values
  ``bio_1``..``bio_19`` and 8 soil layers, six carry signal) and ``sentinel`` (image, a
  4 x 4 grid of R, G, B, NIR 4 x 4 px patches; texture amplitude in the 6 patches nearest
  the site). ``env`` is dominant (61 %).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.patches import patch_names
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.data.contract.splits import spatial_block_split
from miam.data.synthetic.generator import (COVARIATE_FEATURES, _apply_missing, _random_field, _species_response,
                                           _standardise, _token_shares, draw_target, nearest_patch_weights,
                                           species_logits, texture_patches)

#: the variables of the GeoPlant-like ``env`` modality, and those that carry signal (weights)
GEOPLANT_ENV = (*(f"bio{i}" for i in range(1, 20)), "elevation", "landcover", "soil_phh2o", "soil_clay")
GEOPLANT_ENV_SIGNAL = {"bio1": 1.0, "bio12": 0.7, "bio4": 0.5, "elevation": 0.45, "bio15": 0.35, "soil_phh2o": 0.3}
GEOPLANT_CLIMATE_VARIABLES = ("tas", "pr", "tasmax", "tasmin")
GEOPLANT_CLIMATE_TOKENS = (*(f"{y}-{y + 2}" for y in range(2000, 2018, 3)), "2018")
GEOPLANT_LANDSAT_YEARS = tuple(str(y) for y in range(2015, 2021))
#: SatBird's environmental point values (bioclim, then the USA soil layers)
SATBIRD_ENV = (*(f"bio_{i}" for i in range(1, 20)), "bdticm", "bldfie", "cecsol", "clyppt", "orcdrc", "phihox",
               "sltppt", "sndppt")
SATBIRD_ENV_SIGNAL = {"bio_1": 1.0, "bio_12": 0.8, "bio_4": 0.5, "bio_5": 0.4, "sndppt": 0.35, "phihox": 0.3}
TAXABENCH_MODALITIES = ("location", "env", "image", "audio", "satellite")
EMBED_DIM = 32


@dataclass
class Part:
    """One modality of a preset: its tokens, its logit part [N, S] and each token's true share."""

    spec: ModalitySpec
    tokens: np.ndarray
    signal: np.ndarray
    token_shares: np.ndarray


@dataclass(frozen=True)
class Preset:
    """What a preset draws: the task, its sizes and each modality's strength (share of logit sd)."""

    task: str
    n_species: int
    strength: Mapping[str, float]
    build: Callable[[np.random.Generator, np.ndarray, int, float], list[Part]]
    prevalence: tuple[float, float]
    signal_scale: float = 2.5
    groups: Mapping[str, Sequence[str]] | None = None


def linear_part(rng: np.random.Generator, features: np.ndarray, weight: np.ndarray,
                n_species: int) -> tuple[np.ndarray, np.ndarray]:
    """Species respond linearly to ``features`` [N, T, V] with token-variable weights [T, V].

    Returns the logit part [N, S] and each token's realised share [T] (summed over its variables).
    """
    coef = _species_response(rng, weight.ravel(), n_species)
    signal = features.reshape(len(features), -1) @ coef
    return signal, _token_shares(coef).reshape(weight.shape).sum(1)


def _texture_part(rng: np.random.Generator, xy: np.ndarray, n_species: int, grid: int,
                  weight: Callable[[np.ndarray], np.ndarray]) -> Part:
    """A 4-band image of grid x grid 4 px patches whose signal is each patch's texture amplitude.

    ``weight`` maps the patch offsets from the site [P, 2] (km) to each patch's signal weight [P].
    """
    amplitude, pixels, offset = texture_patches(rng, xy, grid, 4, 4, pixel_noise=0.3)
    signal, shares = linear_part(rng, _standardise(amplitude, (0,))[..., None], weight(offset)[:, None], n_species)
    spec = ModalitySpec("sentinel", "image", grid * grid, (4, 4, 4), patch_names(grid, grid), grid=(grid, grid))
    return Part(spec, pixels, signal, shares)


def _centre_and_edges(offset: np.ndarray) -> np.ndarray:
    """1 for the centre patch of an odd grid, 0.45 for its four edge neighbours, 0 elsewhere."""
    dist = np.linalg.norm(offset, axis=1)
    return np.where(dist < 0.1, 1.0, np.where(dist < 0.9, 0.45, 0.0))


def _env_part(rng: np.random.Generator, xy: np.ndarray, n_species: int, lengthscale: float,
              names: Sequence[str], signal: Mapping[str, float]) -> Part:
    """Tabular variables, each an independent field; those in ``signal`` drive the species linearly."""

    env = _random_field(rng, xy, len(names), lengthscale, COVARIATE_FEATURES)[..., None]
    part, shares = linear_part(rng, env, np.array([[signal.get(n, 0.0)] for n in names]), n_species)
    return Part(ModalitySpec("env", "tabular", len(names), (1,), tuple(names)), env, part, shares)


def _geoplant(rng: np.random.Generator, xy: np.ndarray, n_species: int, lengthscale: float) -> list[Part]:
    n = len(xy)
    env = _env_part(rng, xy, n_species, lengthscale, GEOPLANT_ENV, GEOPLANT_ENV_SIGNAL)
    # climate: one token per period or year of variable x month values, as GeoPlant's cubes. Each
    # older three-year period: one field per variable (its mean anomaly) plus month-to-month noise;
    # 2018: an independent field per variable and month. The seasonal cycle carries no signal.
    periods, n_vars = len(GEOPLANT_CLIMATE_TOKENS) - 1, len(GEOPLANT_CLIMATE_VARIABLES)
    season = np.cos(2 * np.pi * (np.arange(12) - 6.5) / 12) * np.array([[8.0], [3.0], [9.0], [7.0]])  # [V, 12]
    older = _random_field(rng, xy, periods * n_vars, lengthscale, COVARIATE_FEATURES).reshape(n, periods, n_vars)
    y2018 = _random_field(rng, xy, n_vars * 12, lengthscale, COVARIATE_FEATURES).reshape(n, 1, n_vars, 12)
    noise = 0.3 * rng.normal(size=(n, periods, n_vars, 12))
    values = np.concatenate([older[..., None] + noise, y2018], 1) + season
    w2018 = np.zeros((n_vars, 12))
    w2018[0, [4, 5, 6]] = [0.55, 1.0, 0.75]   # tas May-Jul
    w2018[1, [2, 3]] = [0.85, 0.4]            # pr Mar-Apr
    w2018[2, 7] = 0.5                          # tasmax Aug
    coef = _species_response(rng, np.concatenate([np.full(periods, 0.3), w2018.ravel()]), n_species)
    shares = _token_shares(coef)                # the tas of each older period, then 2018's variable-months
    climate = Part(ModalitySpec("climate", "timeseries", periods + 1, (n_vars, 12), GEOPLANT_CLIMATE_TOKENS),
                   _standardise(values, (0,)), np.concatenate([older[..., 0], y2018.reshape(n, -1)], 1) @ coef,
                   np.append(shares[:periods], shares[periods:].sum()))
    # landsat: each year's greenness seen through 6 bands x 4 quarters, with noise
    greenness = _random_field(rng, xy, len(GEOPLANT_LANDSAT_YEARS), lengthscale, COVARIATE_FEATURES)
    loading = np.outer([-0.3, 0.2, -0.6, 1.0, -0.4, -0.5], [0.4, 1.0, 0.8, 0.3])   # bands x quarters
    values = greenness[..., None, None] * loading + rng.normal(size=(n, len(GEOPLANT_LANDSAT_YEARS), 6, 4))
    land_signal, land_shares = linear_part(rng, greenness[..., None], np.array([[0, 0, 0.4, 1.0, 0.6, 0.5]]).T,
                                           n_species)
    landsat = Part(ModalitySpec("landsat", "timeseries", len(GEOPLANT_LANDSAT_YEARS), (6, 4), GEOPLANT_LANDSAT_YEARS),
                   _standardise(values, (0,)), land_signal, land_shares)
    # sentinel: the centre patch and its four edge neighbours
    return [env, climate, landsat, _texture_part(rng, xy, n_species, 3, _centre_and_edges)]


def _taxabench(rng: np.random.Generator, xy: np.ndarray, n_species: int, lengthscale: float) -> list[Part]:

    parts, k = [], 6
    for m in TAXABENCH_MODALITIES:
        spatial = m in ("location", "env", "satellite")
        latent = (_random_field(rng, xy, k, lengthscale, COVARIATE_FEATURES) if spatial
                  else rng.normal(size=(len(xy), k)))
        mix = rng.normal(size=(k, EMBED_DIM)) / np.sqrt(k)
        embedding = latent @ mix + 0.5 * rng.normal(size=(len(xy), EMBED_DIM))
        signal, shares = linear_part(rng, latent[:, None, :], np.ones((1, k)), n_species)
        spec = ModalitySpec(m, "embedding", 1, (EMBED_DIM,), (f"{m}[0:{EMBED_DIM}]",))
        parts.append(Part(spec, _standardise(embedding, (0, 1))[:, None, :], signal, shares))
    return parts


def _satbird(rng: np.random.Generator, xy: np.ndarray, n_species: int, lengthscale: float) -> list[Part]:
    env = _env_part(rng, xy, n_species, lengthscale, SATBIRD_ENV, SATBIRD_ENV_SIGNAL)
    return [env, _texture_part(rng, xy, n_species, 4, lambda offset: nearest_patch_weights(offset, 6))]


PRESETS: dict[str, Preset] = {
    "geoplant": Preset("multilabel", 120, {"env": 1.0, "climate": 0.6, "landsat": 0.45, "sentinel": 0.7},
                       _geoplant, prevalence=(0.02, 0.2),
                       groups={"tabular": ["env"], "timeseries": ["climate", "landsat"], "satellite": ["sentinel"]}),
    "taxabench": Preset("multiclass", 30,
                        {"location": 0.45, "env": 0.55, "image": 1.0, "audio": 0.6, "satellite": 0.3},
                        _taxabench, prevalence=(0.08, 0.4), signal_scale=4.0),
    "satbird": Preset("encounter", 80, {"env": 1.0, "sentinel": 0.8}, _satbird, prevalence=(0.005, 0.12)),
}


def make_preset(preset: str, seed: int, n_sites: int, n_species: int | None, missing: Mapping[str, float],
                token_missing: Mapping[str, float], extent_km: float, lengthscale_km: float, block_km: float,
                split_fractions: Sequence[float]) -> MultimodalDataset:
    """Draw the landscape ``preset`` (one of :data:`PRESETS`); see :func:`miam.data.synthetic.generator.make_dataset`."""

    p = PRESETS[preset]
    n_species = p.n_species if n_species is None else n_species
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent_km, size=(n_sites, 2))
    parts = {part.spec.name: part for part in p.build(rng, xy, n_species, lengthscale_km)}
    logits, modality_shares = species_logits({m: part.signal for m, part in parts.items()}, p.strength,
                                             p.signal_scale)
    target = draw_target(rng, logits, p.task, p.prevalence)
    tokens = {m: part.tokens for m, part in parts.items()}
    _apply_missing(rng, tokens, missing, token_missing)
    truth = {
        "modality_importance": modality_shares,
        "token_importance": {m: part.token_shares.tolist() for m, part in parts.items()},
        "dominant_modality": max(modality_shares, key=modality_shares.get),
    }
    if p.groups:
        truth["group_importance"] = {g: sum(modality_shares[m] for m in ms) for g, ms in p.groups.items()}
    task = TaskSpec(p.task, n_species, tuple(f"species_{j:03d}" for j in range(n_species)))
    return MultimodalDataset(
        tokens, target, [part.spec for part in parts.values()], task, coords=xy,
        splits=spatial_block_split(xy, block_km, split_fractions, seed=seed),
        info={"source": "miam.data.synthetic.generator", "preset": preset, "seed": seed, "truth": truth,
              "groups": {g: list(ms) for g, ms in (p.groups or {}).items()}},
    )
