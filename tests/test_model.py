"""The token model: finite with nothing visible, batch of one, batched subsets == one by one."""

import pytest
import torch

from miam.data.synthetic.generator import make_dataset
from miam.errors import InvalidParameterError, ShapeError
from miam.models import TaskLoss, TokenModel, build_model, full_weighted_bce
from miam.models.token_model import CPU_MAX_ROWS, device_max_rows, pick_rows, row_costs


@pytest.fixture(scope="module")
def ds():
    return make_dataset(seed=0, n_sites=120, n_species=6)


@pytest.mark.parametrize("hidden", ["replace", "drop"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_all_hidden_gives_finite_output_and_gradients(ds, hidden, pooling):
    model = TokenModel(ds.specs, ds.task, d_model=32, depth=2, heads=4, hidden=hidden, pooling=pooling)
    batch = ds.__getitems__(list(range(8)))
    vis = torch.zeros(8, model.n_tokens, dtype=torch.bool)
    vis[0, :3] = True  # one sample sees 3 tokens, the others nothing
    out = model(batch, vis)
    assert torch.isfinite(out).all()
    loss = TaskLoss("multilabel", torch.tensor(ds.target.sum(0)), len(ds))(out, batch.target)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("hidden", ["replace", "drop"])
def test_batch_of_one(ds, hidden):
    model = TokenModel(ds.specs, ds.task, d_model=32, depth=1, heads=4, hidden=hidden)
    out = model(ds.__getitems__([3]))
    assert out.shape == (1, 6)


@pytest.mark.parametrize("hidden", ["replace", "drop"])
def test_forward_subsets_equals_one_pass_per_subset(ds, hidden):
    torch.manual_seed(0)
    model = TokenModel(ds.specs, ds.task, d_model=32, depth=2, heads=4, hidden=hidden).eval()
    batch = ds.__getitems__(list(range(10)))
    masks = torch.rand(5, model.n_tokens) > 0.5
    masks[0] = False
    together = model.forward_subsets(batch, masks, max_rows=50)
    for s in range(5):
        one = model(batch, masks[s].expand(10, -1))
        assert torch.allclose(together[s], one, atol=1e-5)


@pytest.mark.parametrize("architecture", ["token", "late_fusion"])
def test_forward_subsets_runs_in_passes_of_max_rows(ds, architecture):
    torch.manual_seed(0)
    model = build_model(ds.specs, ds.task, architecture, d_model=16, depth=1, heads=2).eval()
    batch = ds.__getitems__(list(range(10)))
    shared = torch.rand(5, model.n_tokens) > 0.5
    per_sample = torch.rand(5, 10, model.n_tokens) > 0.5
    # the token model embeds once and runs its head once a pass; late fusion embeds each modality once a pass
    tokenizer = model.tokenizers["env"] if architecture == "token" else model.encoders["env"].tokenizers["env"]
    per_pass = model.head if architecture == "token" else tokenizer
    for masks in (shared, per_sample):
        with torch.no_grad():
            one_pass = model.forward_subsets(batch, masks, max_rows=50)
        for max_rows, passes in ((1, 5), (20, 3), (30, 2), (None, 1)):   # 1, 2 or 3 masks a pass; CPU: 256 rows
            calls = {"embed": 0, "pass": 0}
            hooks = [tokenizer.register_forward_hook(lambda *_: calls.__setitem__("embed", calls["embed"] + 1)),
                     per_pass.register_forward_hook(lambda *_: calls.__setitem__("pass", calls["pass"] + 1))]
            with torch.no_grad():
                logits = model.forward_subsets(batch, masks, max_rows)
            for hook in hooks:
                hook.remove()
            torch.testing.assert_close(logits, one_pass, atol=1e-6, rtol=0)
            assert calls == {"embed": 1 if architecture == "token" else passes, "pass": passes}


def test_drop_mode_packs_visible_tokens(ds):
    # drop and replace differ, but drop with all tokens visible and no missing equals full attention
    torch.manual_seed(0)
    model = TokenModel(ds.specs, ds.task, d_model=32, depth=1, heads=4, hidden="drop").eval()
    batch = ds.__getitems__([0, 1])
    vis = torch.zeros(2, model.n_tokens, dtype=torch.bool)
    vis[:, 5] = True
    emb = model.embed(batch, vis)
    # only token 5 and CLS: same result as a model fed just those two tokens
    pooled = model.encode(emb, vis)
    direct = model.norm(model.encoder(torch.cat([model.cls.expand(2, 1, -1), emb[:, 5:6]], dim=1))).mean(1)
    assert torch.allclose(pooled, direct, atol=1e-5)


def test_model_errors(ds):
    with pytest.raises(ShapeError, match="divisible"):
        TokenModel(ds.specs, ds.task, d_model=30, heads=4)
    with pytest.raises(InvalidParameterError, match="'hidden' parameter of TokenModel"):
        TokenModel(ds.specs, ds.task, hidden="skip")
    with pytest.raises(InvalidParameterError, match="'architecture'"):
        build_model(ds.specs, ds.task, architecture="cnn")
    model = TokenModel(ds.specs, ds.task, d_model=32, depth=1, heads=4)
    with pytest.raises(ShapeError, match=r"Expected `visible` \[2, 40\]"):
        model(ds.__getitems__([0, 1]), torch.ones(2, 39, dtype=torch.bool))


def test_full_weighted_bce_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([4.0, 3.0])
    sig = torch.sigmoid(logits)
    pos = (w * y * -torch.log(sig)).mean()
    neg = (w / (w - 1) * (1 - y) * -torch.log(1 - sig)).mean()
    assert torch.allclose(full_weighted_bce(logits, y, w), pos + neg)
    assert torch.isfinite(full_weighted_bce(torch.tensor([[80.0, -80.0]]), torch.tensor([[0.0, 1.0]]), w))


def test_rows_per_pass_from_a_measurement(ds):
    model = TokenModel(ds.specs, ds.task, d_model=16, depth=1, heads=2).eval()
    batch = ds.__getitems__(list(range(8)))
    costs = row_costs(model, batch, rows=(4, 16), repeats=1)       # 4 rows: half the batch; 16: two masks
    assert list(costs) == [4, 16] and all(c > 0 for c in costs.values())
    assert pick_rows({1024: 3e-6, 4096: 1.08e-6, 16384: 1e-6}) == 4096
    assert pick_rows({1024: 3e-6, 4096: 1.2e-6, 16384: 1e-6}) == 16384
    assert device_max_rows(model, batch) == CPU_MAX_ROWS            # the CPU keeps its measured default
