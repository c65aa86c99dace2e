"""Embedded default data: an ecological-looking multimodal landscape with a known truth.

Sites lie in a square landscape (coordinates in km). Every covariate is a spatially
autocorrelated Gaussian random field (random Fourier features of an RBF kernel), so
nearby sites look alike and a spatial block split is needed for honest scores. Tokens
are independent of each other, so each one's true importance is well defined.

Modalities (default sizes):

* ``env`` — 12 tabular variables; the first ``n_env_informative`` drive the species
  *linearly* with decreasing strength, the rest are spatially structured noise.
  Easy and fast to learn, but only part of the signal.
* ``climate`` — 3 variables x 12 months, one token per month (token_shape ``[3]``);
  the species respond to month-specific anomalies of temperature in May-Jul and of
  precipitation in Mar-Apr; the other months carry no signal.
* ``satellite`` — a 4-band 16 x 16 image cut into 4 x 4 patches of 4 x 4 pixels; the
  signal is the *texture amplitude* of a fine-scale habitat field in the
  ``n_sat_informative`` patches nearest the site, nearer ones weighing more. A nonlinear
  (|.|-like) function of the pixels, so slower to learn, and independent of ``env``:
  complementary signal.
* ``coords`` (optional) — the normalised location.

Every species' logit is ``a_env f_env + a_clim f_clim + a_sat f_sat + bias`` with each
``f`` standardised, so the ground truth of modality importance is the share of
logit variance, and within a modality each token's share of that modality's part, as
realised by the drawn coefficients. Both are in ``dataset.info["truth"]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import numpy as np

from miam._validation import check_choice
from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.data.contract.splits import spatial_block_split
from miam.errors import InvalidParameterError

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CLIMATE_VARIABLES = ("tas", "pr", "rsds")
#: random Fourier features of each env and climate field (few would make fields stand in for the location)
COVARIATE_FEATURES = 512


def _random_field(rng: np.random.Generator, xy: np.ndarray, n_fields: int, lengthscale: float,
                  n_features: int = 96) -> np.ndarray:
    """``n_fields`` standardised, spatially autocorrelated fields at points ``xy`` [N, 2] -> [N, n_fields].

    Few features or a lengthscale near the landscape's size make every field a smooth
    function of location, so a handful of unrelated fields predict any other one (a
    location proxy): the covariates use many features and a short lengthscale.
    """
    omega = rng.normal(0.0, 1.0 / lengthscale, size=(n_fields, 2, n_features))
    phase = rng.uniform(0, 2 * np.pi, size=(n_fields, 1, n_features))
    amp = rng.normal(size=(n_fields, n_features))
    f = np.stack([np.cos(xy @ omega[k] + phase[k]) @ amp[k] for k in range(n_fields)], 1)  # [N, K], memory N x F
    return (f - f.mean(0)) / (f.std(0) + 1e-12)


def _standardise(x: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    return (x - x.mean(axis=axis, keepdims=True)) / (x.std(axis=axis, keepdims=True) + 1e-12)


def _species_response(rng: np.random.Generator, weight: np.ndarray, n_species: int) -> np.ndarray:
    """Coefficients [T, S], random per species, whose realised token shares are ``weight**2`` (normalised).

    Squared responses are balanced by Sinkhorn scaling: every token has mean square 1 over
    species and every species the same total ``sum(weight**2)``, so no draw of the
    coefficients reorders the designed importance of the tokens.
    """
    g = rng.normal(size=(len(weight), n_species))
    g2, w2 = g ** 2, weight ** 2
    for _ in range(100):
        g2 /= g2.mean(1, keepdims=True)
        g2 *= w2.sum() / (w2 @ g2)[None]
    return weight[:, None] * np.sign(g) * np.sqrt(g2)


def texture_patches(rng: np.random.Generator, xy: np.ndarray, grid: int, patch_size: int, n_bands: int,
                    pixel_noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image patches whose signal is the *texture amplitude* of a fine-scale habitat, per patch.

    A grid x grid image around each site (patch centres 0.8 km apart); each patch holds a
    checkerboard of amplitude ``softplus(1.5 h)`` (h independent per site and patch, so the
    truth is per patch) with a random sign, a spatially smooth brightness per band, and pixel
    noise. The signal is an |.|-like function of the pixels: slower to learn than a linear one.

    Returns:
        amplitude [N, P] (the signal), pixels [N, P, n_bands, p, p] scaled to unit sd, and
        the patch offsets [P, 2] in km from the site, row-major.
    """
    n_sites = len(xy)
    offsets = (np.arange(grid) - (grid - 1) / 2) * 0.8  # km between patch centres
    dx, dy = np.meshgrid(offsets, offsets, indexing="ij")
    patch_offset = np.stack([dx.ravel(), dy.ravel()], 1)
    patch_xy = xy[:, None, :] + patch_offset[None]                                  # [N, P, 2]
    n_patches = grid * grid
    # fine-scale habitat varies below the patch spacing: independent between patches, so the truth is per patch
    habitat = rng.normal(size=(n_sites, n_patches))
    amplitude = np.log1p(np.exp(1.5 * habitat))                                      # softplus >= 0
    brightness = _random_field(rng, patch_xy.reshape(-1, 2), n_bands, lengthscale=3.0)
    brightness = brightness.reshape(n_sites, n_patches, n_bands)
    u, v = np.meshgrid(np.arange(patch_size), np.arange(patch_size), indexing="ij")
    checker = np.where((u + v) % 2 == 0, 1.0, -1.0)                                  # [p, p]
    sign = rng.choice([-1.0, 1.0], size=(n_sites, n_patches, 1))                     # phase hides the sign
    band_gain = np.array([0.6, 1.0, -0.8, 1.4])[:n_bands] if n_bands <= 4 else rng.normal(size=n_bands)
    pixels = (amplitude[..., None] * sign * band_gain)[..., None, None] * checker \
        + 0.5 * brightness[..., None, None] \
        + pixel_noise * rng.normal(size=(n_sites, n_patches, n_bands, patch_size, patch_size))
    return amplitude, pixels / pixels.std(), patch_offset


def species_logits(parts: Mapping[str, np.ndarray], strength: Mapping[str, float],
                   signal_scale: float) -> tuple[np.ndarray, dict[str, float]]:
    """Logits [N, S] from each modality's part, standardised and scaled by its strength.

    Returns the logits and each modality's true share of their variance (``strength**2``,
    normalised), since the parts are independent.
    """
    logits = sum(strength[m] * _standardise(parts[m], (0,)) for m in parts)
    norm = np.sqrt(sum(strength[m] ** 2 for m in parts))
    shares = np.array([strength[m] ** 2 for m in parts])
    return signal_scale * logits / norm, dict(zip(parts, (shares / shares.sum()).tolist()))


def draw_target(rng: np.random.Generator, logits: np.ndarray, task: str,
                prevalence: tuple[float, float] = (0.08, 0.4)) -> np.ndarray:
    """Targets from logits [N, S]: presences (``multilabel``), one class (``multiclass``) or rates.

    Each species' bias sets its baseline prevalence, drawn in ``prevalence``. ``encounter``
    targets are SatBird-like rates: the share of 5-49 checklists per site that report the
    species, each with the site's presence probability.
    """
    lo, hi = prevalence
    p0 = rng.uniform(lo, hi, size=logits.shape[1])
    bias = np.log(p0 / (1 - p0))
    if task == "multiclass":
        return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    prob = 1 / (1 + np.exp(-(logits + bias)))
    if task == "multilabel":
        return (rng.uniform(size=logits.shape) < prob).astype(np.float32)
    checklists = rng.integers(5, 50, size=(len(logits), 1))
    return (rng.binomial(checklists, prob) / checklists).astype(np.float32)


def nearest_patch_weights(patch_offset: np.ndarray, n_informative: int) -> np.ndarray:
    """Weights [P] falling from 1 to 0.3 over the ``n_informative`` patches nearest the site, 0 elsewhere.

    The site lies a little off the image centre (0.15, -0.1 km), so no two patches tie.
    """
    nearest = np.argsort(np.linalg.norm(patch_offset - np.array([0.15, -0.1]), axis=1))[:n_informative]
    weight = np.zeros(len(patch_offset))
    weight[nearest] = np.linspace(1.0, 0.3, n_informative)
    return weight


def _token_shares(coef: np.ndarray) -> np.ndarray:
    """Each token's share of the modality's logit variance, summed over species and normalised.

    Tokens are independent unit-variance fields and each species' part is standardised, so
    token t explains ``coef[t, s]**2 / sum_t coef[t, s]**2`` of species s's part: the truth
    as realised by this draw of coefficients, not only its expectation.
    """
    per_species = coef ** 2 / np.maximum((coef ** 2).sum(0, keepdims=True), 1e-300)
    return per_species.sum(1) / per_species.sum()


def make_dataset(
    seed: int = 0,
    n_sites: int = 3000,
    n_species: int | None = None,
    task: str = "multilabel",
    n_env: int = 12,
    n_env_informative: int = 6,
    n_sat_informative: int = 5,
    image_size: int = 16,
    patch_size: int = 4,
    n_bands: int = 4,
    with_coords: bool = False,
    strength: Mapping[str, float] | None = None,
    signal_scale: float = 2.5,
    pixel_noise: float = 0.3,
    missing: Mapping[str, float] | None = None,
    token_missing: Mapping[str, float] | None = None,
    extent_km: float = 100.0,
    lengthscale_km: float = 2.5,
    block_km: float = 10.0,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    preset: str | None = None,
    covariate_correlation: float = 0.0,
) -> MultimodalDataset:
    """Generate the embedded multimodal dataset, deterministic from ``seed``.

    Args:
        seed: every random choice follows from it.
        n_sites: the number of sites.
        n_species: the number of species (None: 24, or the preset's); ``task="multiclass"``
            gives one species label per site.
        strength: share of logit standard deviation per modality
            (default ``env 1.0, climate 0.6, satellite 0.9``: env dominates and is easy).
        signal_scale: overall logit scale (higher = cleaner labels).
        pixel_noise: standard deviation of the satellite pixel noise (the texture amplitude is ~1).
        missing: share of sites missing a whole modality, e.g. ``{"satellite": 0.2}``.
        token_missing: share of tokens missing at random, e.g. ``{"env": 0.05}``.
        lengthscale_km: correlation length of the env and climate fields; well under
            ``extent_km`` so that no modality's fields stand in for the location (and so
            for the others' signal), yet neighbouring sites (~1 km apart) stay alike.
        block_km: side of the square blocks of the spatial train/val/test split.
        preset: ``None`` (the embedded demo landscape) or a benchmark-shaped landscape of
            :mod:`miam.data.synthetic.presets` (``geoplant``, ``taxabench``, ``satbird``). A
            preset sets its own task, modalities and strengths: only ``seed``, ``n_sites``,
            ``n_species``, ``missing``, ``token_missing``, ``extent_km``, ``lengthscale_km``,
            ``block_km`` and ``split_fractions`` apply, and setting another parameter is an error.
        covariate_correlation: share c in [0, 1) of every env variable's and climate anomaly's
            variance drawn from four shared latent fields (:data:`SHARED_FIELDS`), as real layers
            are correlated (temperature with elevation, rain with both). 0 (the default) keeps every
            token independent; with c > 0 a hidden token can be partly reconstructed from the
            others, which masked pretraining (docs/pretraining.md) needs, and the truth's shares are
            those of each token's direct effect.

    Returns:
        a :class:`MultimodalDataset` with ``splits`` train/val/test, ``coords`` in km and
        ``info["truth"]`` = ``{"modality_importance": {m: share}, "token_importance":
        {m: [T_m] shares}}``; a preset's truth adds ``dominant_modality`` and, where it has
        groups (``info["groups"]``), ``group_importance``. docs/presets.md lists each preset's.

    Examples:
        >>> ds = make_dataset(seed=0, n_sites=200)
        >>> ds.modalities, len(ds.split("train")) > 100
        (['env', 'climate', 'satellite'], True)
    """
    if preset is not None:
        from miam.data.synthetic.presets import PRESETS, make_preset

        check_choice("make_dataset", "preset", preset, PRESETS)
        demo_only = {"task": task, "n_env": n_env, "n_env_informative": n_env_informative,
                     "n_sat_informative": n_sat_informative, "image_size": image_size, "patch_size": patch_size,
                     "n_bands": n_bands, "with_coords": with_coords, "strength": strength,
                     "signal_scale": signal_scale, "pixel_noise": pixel_noise,
                     "covariate_correlation": covariate_correlation}
        defaults = inspect.signature(make_dataset).parameters
        changed = sorted(k for k, v in demo_only.items() if v != defaults[k].default)
        if changed:
            raise InvalidParameterError(f"make_dataset: {changed} describe the demo landscape and cannot be set "
                                        f"with preset={preset!r}; the preset sets them itself.")
        return make_preset(preset, seed, n_sites, n_species, missing or {}, token_missing or {}, extent_km,
                           lengthscale_km, block_km, split_fractions)
    n_species = 24 if n_species is None else n_species
    check_choice("make_dataset", "task", task, ("multilabel", "multiclass"))
    if image_size % patch_size:
        raise InvalidParameterError(f"image_size={image_size} must be a multiple of patch_size={patch_size}.")
    if not 0 < n_env_informative <= n_env:
        raise InvalidParameterError(f"n_env_informative must be in [1, n_env={n_env}], got {n_env_informative}.")
    if not 0 <= covariate_correlation < 1:
        raise InvalidParameterError(f"make_dataset: covariate_correlation must be in [0, 1), got {covariate_correlation}.")
    strength = {"env": 1.0, "climate": 0.6, "satellite": 0.9, **(strength or {})}
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent_km, size=(n_sites, 2))
    shared = _shared_part(seed, xy, lengthscale_km, covariate_correlation)

    # --- env: informative fields first, then structured noise.
    env = shared(_random_field(rng, xy, n_env, lengthscale_km, COVARIATE_FEATURES))
    env_weight = np.zeros(n_env)
    env_weight[:n_env_informative] = np.linspace(1.0, 0.25, n_env_informative)
    env_coef = _species_response(rng, env_weight, n_species)
    f_env = env @ env_coef

    # --- climate: seasonal cycle + month-specific anomalies, independent between months,
    #     so a month without a weight tells nothing about the species (its true share is 0).
    n_months, n_vars = len(MONTHS), len(CLIMATE_VARIABLES)
    season = np.stack([np.cos(2 * np.pi * (np.arange(n_months) - 6.5) / 12) * a for a in (8.0, 3.0, 5.0)], 1)
    anomaly = shared(_random_field(rng, xy, n_months * n_vars, lengthscale_km, COVARIATE_FEATURES))
    anomaly = anomaly.reshape(n_sites, n_months, n_vars)
    climate = season[None] + anomaly
    clim_weight = np.zeros((n_months, n_vars))
    clim_weight[[4, 5, 6], 0] = [0.55, 1.0, 0.75]    # tas May-Jul
    clim_weight[[2, 3], 1] = [0.85, 0.4]             # pr Mar-Apr
    clim_coef = _species_response(rng, clim_weight.ravel(), n_species)
    f_clim = anomaly.reshape(n_sites, -1) @ clim_coef

    # --- satellite: texture amplitude of a fine-scale habitat field in each patch; the
    #     ``n_sat_informative`` patches nearest the site (which lies a little off the image
    #     centre) count, nearer ones more. Every species responds to the same footprint.
    grid = image_size // patch_size
    n_patches = grid * grid
    if not 0 < n_sat_informative <= n_patches:
        raise InvalidParameterError(f"n_sat_informative must be in [1, {n_patches}] patches, got {n_sat_informative}.")
    amplitude, pixels, patch_offset = texture_patches(rng, xy, grid, patch_size, n_bands, pixel_noise)
    sat_weight = nearest_patch_weights(patch_offset, n_sat_informative)
    sat_coef = sat_weight[:, None] * rng.normal(size=(1, n_species))
    f_sat = _standardise(amplitude, (0,)) @ sat_coef

    # --- species logits: each modality's part standardised, scaled by its strength.
    parts = {"env": f_env, "climate": f_clim, "satellite": f_sat}
    logits, modality_shares = species_logits(parts, strength, signal_scale)
    target = draw_target(rng, logits, task)

    # --- tokens, standardised per token position.
    patch_names = tuple(f"r{r}c{c}" for r in range(grid) for c in range(grid))
    tokens = {
        "env": _standardise(env, (0,))[:, :, None],
        "climate": _standardise(climate, (0,)),
        "satellite": pixels,
    }
    specs = [
        ModalitySpec("env", "tabular", n_env, (1,), tuple(f"env{k:02d}" for k in range(n_env))),
        ModalitySpec("climate", "timeseries", n_months, (n_vars,), MONTHS),
        ModalitySpec("satellite", "image", n_patches, (n_bands, patch_size, patch_size), patch_names,
                     grid=(grid, grid)),
    ]
    if with_coords:
        tokens["coords"] = (xy / extent_km * 2 - 1)[:, None, :]
        specs.append(ModalitySpec("coords", "coords", 1, (2,), ("xy",)))

    _apply_missing(rng, tokens, missing or {}, token_missing or {})
    truth = {
        "modality_importance": modality_shares,
        "token_importance": {
            "env": _token_shares(env_coef).tolist(),
            "climate": _token_shares(clim_coef).reshape(n_months, n_vars).sum(1).tolist(),
            "satellite": _token_shares(sat_coef).tolist(),
        },
        "easy_modality": "env",
        "slow_modality": "satellite",
    }
    if with_coords:
        truth["modality_importance"]["coords"] = 0.0
        truth["token_importance"]["coords"] = [0.0]
    task_spec = TaskSpec(task, n_species, tuple(f"species_{j:02d}" for j in range(n_species)))
    splits = spatial_block_split(xy, block_km, split_fractions, seed=seed)
    return MultimodalDataset(
        tokens, target, specs, task_spec, coords=xy, splits=splits,
        info={"source": "miam.data.synthetic.generator", "seed": seed, "truth": truth},
    )


#: latent fields shared by the covariates when ``covariate_correlation > 0``
SHARED_FIELDS = 4


def _shared_part(seed: int, xy: np.ndarray, lengthscale: float, c: float):
    """A function mixing fields [N, K] with the landscape's shared latent fields: sqrt(1 - c) f + sqrt(c) (z @ u),
    u a unit loading per field (drawn from its own stream, so c = 0 leaves every other draw unchanged)."""
    if c == 0:
        return lambda f: f
    rng = np.random.default_rng([seed, SHARED_FIELDS])
    latent = _random_field(rng, xy, SHARED_FIELDS, lengthscale, COVARIATE_FEATURES)

    def mix(f: np.ndarray) -> np.ndarray:
        u = rng.normal(size=(SHARED_FIELDS, f.shape[1]))
        u /= np.linalg.norm(u, axis=0, keepdims=True)
        return np.sqrt(1 - c) * f + np.sqrt(c) * (latent @ u)

    return mix


def _apply_missing(rng: np.random.Generator, tokens: dict[str, np.ndarray],
                   missing: Mapping[str, float], token_missing: Mapping[str, float]) -> None:
    for table in (missing, token_missing):
        unknown = [m for m in table if m not in tokens]
        if unknown:
            raise InvalidParameterError(f"make_dataset: unknown modality {unknown} in missing rates; "
                                        f"valid names are {list(tokens)}.")
        bad = {m: r for m, r in table.items() if not 0 <= r < 1}
        if bad:
            raise InvalidParameterError(f"make_dataset: missing rates must be in [0, 1), got {bad}.")
    for m, x in tokens.items():
        n, t = x.shape[:2]
        hide = np.zeros((n, t), dtype=bool)
        hide |= rng.uniform(size=(n, 1)) < missing.get(m, 0.0)
        hide |= rng.uniform(size=(n, t)) < token_missing.get(m, 0.0)
        x[hide] = np.nan
