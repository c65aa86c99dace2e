"""A real 2-process CPU DDP run (gloo): every rank masks with the same rho."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_two_process_ddp_ranks_share_rho(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert len(r0) == len(r1) == 3
    for a, b in zip(r0, r1):
        assert a["history"] == b["history"]          # scores gathered across ranks, not per shard
        assert a["weights"] == b["weights"]
        assert a["p_next_step"] == b["p_next_step"]  # the same masking draw on every rank
    assert r0[-1]["weights"] != [1.0, 1.0, 1.0]      # the feedback did move
    # each rank scored its own half of the validation set
    assert r0[0]["n_val_shard"] + r1[0]["n_val_shard"] == r0[0]["n_val"]
    assert 0 < r0[0]["n_val_shard"] < r0[0]["n_val"]
