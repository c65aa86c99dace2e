"""Real 2-process CPU DDP runs (gloo): every rank masks with the same rho, and every
balancing method computes the same coefficients on every rank."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from miam.balance import list_methods


def _run_worker(out: Path, mode: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(out), mode], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def masking_runs(tmp_path_factory):
    """One worker launch: 3 epochs with one p per step, then 2 steps with per-sample p."""
    out = tmp_path_factory.mktemp("ddp_masking")
    _run_worker(out, "masking")
    return out


def test_two_process_ddp_ranks_share_rho(masking_runs):
    r0, r1 = (json.loads((masking_runs / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0) == len(r1) == 3
    for a, b in zip(r0, r1):
        assert a["history"] == b["history"]          # scores gathered across ranks, not per shard
        assert a["weights"] == b["weights"]
        assert a["p_next_step"] == b["p_next_step"]  # the same masking draw on every rank
    assert r0[-1]["weights"] != [1.0, 1.0, 1.0]      # the feedback did move
    for a, b in zip(r0, r1):   # each rank scored its own half of the validation set, then the scores were synced
        assert not set(a["scored_ids"]) & set(b["scored_ids"])
        assert len(a["scored_ids"]) + len(b["scored_ids"]) == a["n_val"]
        assert a["n_scored_before_sync"] == len(a["scored_ids"]) and b["n_scored_before_sync"] == len(b["scored_ids"])
        assert 0 < len(a["scored_ids"]) < a["n_val"]


def test_two_process_ddp_per_sample_draws_differ_across_ranks(masking_runs):
    r0, r1 = (json.loads((masking_runs / f"per_sample_rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0) == len(r1) == 2
    for a, b in zip(r0, r1):
        assert len(a) == len(b) == 64 and len({tuple(row) for row in a}) == 64   # one p per sample ...
        assert not {tuple(row) for row in a} & {tuple(row) for row in b}          # ... and per rank


@pytest.fixture(scope="module")
def balance_runs(tmp_path_factory):
    """One worker launch trains every balancing method in turn, 2 epochs of 2 batches per rank."""
    out = tmp_path_factory.mktemp("ddp_balance")
    _run_worker(out, "balance")
    return out


@pytest.mark.parametrize("method", list_methods())
def test_two_process_ddp_balancing_method_ranks_agree(balance_runs, method):
    r0, r1 = (json.loads((balance_runs / f"{method}_rank{r}.json").read_text()) for r in (0, 1))
    assert r0["n_batches"] == 2 and len(r0["steps"]) == len(r1["steps"]) == 4
    for a, b in zip(r0["steps"], r1["steps"]):
        assert a["step"] == b["step"]
        assert a["stats"] == b["stats"]   # the same coefficients, bit for bit, at every step
        assert a["state"] == b["state"]   # the same learned state (projector, accuracies, lr scales)
    assert any(s["stats"] for s in r0["steps"])
    assert r0["params"] == r1["params"]   # identical weights at the end


def test_ddp_asks_for_unused_parameter_search_where_a_backward_is_partial(balance_runs):
    for rank in (0, 1):
        message = (balance_runs / f"mla_refused_rank{rank}.txt").read_text()
        assert "'mla' back-propagates through part of the model" in message
        assert "trainer.strategy: ddp_find_unused_parameters_true" in message
