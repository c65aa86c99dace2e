"""Write a tiny TaxaBench-8k folder: test_df.csv, the SINR env grid, images, satellite tiles, sounds, embeddings.

Follows ``miam.data.benchmarks.taxabench``'s card. Sounds are WAV files but one, a real ``.m4a``
(AAC, as the hub's, written with PyAV): 3 s of a 440 Hz tone. Defects on purpose: one
observation without a ground image, one whose ``.m4a`` is not audio (undecodable), one
with a zero (missing) audio embedding, one at sea (NaN environment), a rare species
below ``min_samples``.

Run ``python tests/data/taxabench.py DIR`` to write one by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import soundfile
import torch
from PIL import Image

SPECIES = ["Turdus migratorius", "Cardinalis cardinalis", "Bufo bufo", "Quercus robur", "Rana temporaria"]
RARE = "Lynx lynx"


#: the ``.m4a`` recording: a 440 Hz tone of 3 s at 16 kHz
TONE = (0.1 * np.sin(2 * np.pi * 440 * np.arange(16_000 * 3) / 16_000)).astype(np.float32)


def write_m4a(path: Path, wave: np.ndarray, rate: int) -> None:
    """Encode mono float32 samples as AAC in an MPEG-4 audio file, in the encoder's frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        n = 1024                                     # AAC-LC samples per frame
        for start in range(0, len(wave), n):
            chunk = np.pad(wave[start:start + n], (0, max(0, start + n - len(wave))))
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write(root: str | Path, seed: int = 0, per_species: int = 12, dim: int = 512) -> dict:
    """Write the folder; return ``{"ids", "species", "embeddings", "no_image", "m4a", "bad_audio", "zero_audio",
    "at_sea"}``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = np.array([s for s in SPECIES for _ in range(per_species)] + [RARE] * 3)
    n = len(names)
    ids = 22_600 + rng.choice(207_000_000 - 22_600, n, replace=False)
    lat, lon = rng.uniform(-40, 60, n), rng.uniform(-120, 150, n)
    at_sea = int(ids[2])
    table = pd.DataFrame({
        "Unnamed: 0.1": np.arange(n), "Unnamed: 0": np.arange(n),
        "image_url": [f"https://static.inaturalist.org/photos/{i}/medium.jpg" for i in ids],
        "sound_url": [f"https://static.inaturalist.org/sounds/{i}.wav" for i in ids],
        "id": ids, "observed_on": "2021-05-01", "quality_grade": "research", "license": "CC-BY",
        "latitude": lat, "longitude": lon, "positional_accuracy": rng.integers(1, 100, n),
        "private_latitude": np.nan, "scientific_name": names, "common_name": "", "iconic_taxon_name": "Aves",
        "taxon_id": pd.factorize(names)[0] + 1000, "sound_format": "wav",
    }).sample(frac=1.0, random_state=seed)
    root.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "test_df.csv", index=False)
    np.save(root / "taxa_names.npy", np.array(SPECIES + [RARE]))
    grid = rng.normal(size=(36, 72, 20)).astype(np.float16)            # 5-degree SINR-like grid
    row, col = int((90 - lat[2]) * 36 / 180), int((lon[2] + 180) * 72 / 360)
    grid[row, col] = np.nan
    np.save(root / "bioclim_elevation_scaled.npy", grid)
    for d in ("taxabench_images", "sat_images/sentinel", "taxabench_sound"):
        (root / d).mkdir(parents=True, exist_ok=True)
    no_image, m4a, bad_audio = int(ids[0]), int(ids[1]), int(ids[3])
    for i, obs in enumerate(ids.tolist()):
        pix = rng.integers(0, 255, size=(int(rng.integers(60, 90)), int(rng.integers(60, 90)), 3)).astype(np.uint8)
        if obs != no_image:
            Image.fromarray(pix).save(root / "taxabench_images" / f"{obs}.jpg")
        Image.fromarray(pix[:64, :64]).save(root / "sat_images/sentinel" / f"{obs}_{lat[i]:.4f}_{lon[i]:.4f}.jpeg")
        if obs == m4a:
            write_m4a(root / "taxabench_sound" / f"{obs}.m4a", TONE, 16_000)
        elif obs == bad_audio:
            (root / "taxabench_sound" / f"{obs}.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
        else:
            sr = 8000 if i % 2 else 22050
            t = np.arange(int(sr * rng.uniform(1.0, 4.0))) / sr
            soundfile.write(root / "taxabench_sound" / f"{obs}.wav", np.sin(2 * np.pi * 440 * t) * 0.1, sr)
    emb = {k: torch.from_numpy(rng.normal(size=(n, dim)).astype(np.float32)) for k in ("loc", "env", "img", "aud", "sat")}
    zero_audio = int(ids[4])
    emb["aud"][4] = 0.0
    torch.save({"ids": torch.from_numpy(ids), **emb}, root / "taxabench_embeds_loc_env_img_aud_sat.pt")
    return {"ids": ids, "species": dict(zip(ids.tolist(), names.tolist())), "embeddings": emb,
            "no_image": no_image, "m4a": m4a, "bad_audio": bad_audio, "zero_audio": zero_audio, "at_sea": at_sea}


if __name__ == "__main__":
    write(sys.argv[1])
