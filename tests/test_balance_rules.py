"""Each balancing method's rule against hand-computed values."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from miam.balance import get_method, list_methods
from miam.balance.methods import StepContext, method_class
from miam.balance.methods.amss import amss_keep_fractions, channel_mask, label_entropy
from miam.balance.methods.arm import (arm_contributions, arm_weights, feature_information,
                                      normalised_conditional_mutual_information, normalised_mutual_information)
from miam.balance.methods.cggm import cggm_coefficients, cggm_direction_loss, head_accuracy
from miam.balance.methods.functional import positive_scores, ratio_to_others, unimodal_scores
from miam.balance.methods.miles import miles_lr_scales
from miam.balance.methods.mla import project_gradient, rls_projector_update
from miam.balance.methods.mnl import negative_learning_term
from miam.balance.methods.msam import normalise_shares, sam_gradient
from miam.balance.methods.ogm_ge import modulate_gradient, ogm_coefficients
from miam.balance.methods.opm_feature import opm_drop_probabilities
from miam.data.synthetic import make_dataset
from miam.errors import ConfigError, InvalidParameterError
from miam.evaluation.functional import all_coalitions, shapley_matrix
from miam.models import LateFusionModel


@pytest.fixture(scope="module")
def ds():
    return make_dataset(seed=0, n_sites=80, n_species=5)


def _model(ds, **kw):
    torch.manual_seed(0)
    return LateFusionModel(ds.specs, ds.task, **{"d_model": 8, "depth": 1, "heads": 2, "dropout": 0.0, **kw})


# ---------------------------------------------------------------- shared maths
def test_unimodal_scores_by_hand():
    z = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [3.0, 0.0]]])   # [M=2, B=2, C=2]
    y = torch.tensor([0, 0])
    s = unimodal_scores(z, y, "multiclass")
    e = math.e
    assert s.tolist() == pytest.approx([e / (e + 1) + 0.5, 1 / (1 + e ** 2) + e ** 3 / (e ** 3 + 1)], rel=1e-6)
    # multilabel: species 0 has a positive and a negative, species 1 only positives (left out)
    z = torch.tensor([[[2.0, 5.0], [-1.0, 5.0]]])
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    sig = torch.sigmoid
    assert float(unimodal_scores(z, y, "multilabel")[0]) == pytest.approx(float(sig(torch.tensor(2.0)) - sig(torch.tensor(-1.0))))
    assert positive_scores(torch.tensor([-1.0, 0.0, 1.0]), "multilabel").tolist() == [0.0, 0.5, 1.0]


def test_ratio_to_others_reduces_to_the_two_modality_ratio():
    assert ratio_to_others(torch.tensor([0.9, 0.3])).tolist() == pytest.approx([3.0, 1 / 3])
    s = torch.tensor([0.8, 0.4, 0.2, 0.1])
    assert float(ratio_to_others(s)[0]) == pytest.approx((2 + 4 + 8) / 3)


class TwoShards:
    """Two DDP ranks in one process: run a statistic on shard B, recording what it reduces,
    then on shard A with each reduction adding (or taking the maximum with) B's."""

    def __init__(self):
        self.seen = {"sum": [], "max": []}
        self.replay = False

    def reduce(self, kind):
        def op(t):
            if not self.replay:
                self.seen[kind].append(t.detach().clone())
                return t.detach()
            other = self.seen[kind].pop(0)
            return t.detach() + other if kind == "sum" else torch.maximum(t.detach(), other)
        return op

    def __call__(self, statistic, shard_a, shard_b):
        statistic(*shard_b, self.reduce("sum"), self.reduce("max"))
        self.replay = True
        return statistic(*shard_a, self.reduce("sum"), self.reduce("max"))


def test_batch_statistics_reduced_over_shards_equal_the_whole_batchs():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 40, 4, generator=gen)
    y = torch.randint(0, 4, (40,), generator=gen)
    y_ml = (torch.rand(40, 4, generator=gen) < 0.4).float()
    a, b = slice(0, 15), slice(15, 40)
    for target, kind in [(y, "multiclass"), (y_ml, "multilabel")]:
        def scores(z_, t_, reduce_sum, reduce_max, kind=kind):
            return unimodal_scores(z_, t_, kind, reduce_sum)
        sharded = TwoShards()(scores, (z[:, a], target[a]), (z[:, b], target[b]))
        assert sharded.tolist() == pytest.approx(unimodal_scores(z, target, kind).tolist(), abs=1e-6)

        def accuracy(z_, t_, reduce_sum, reduce_max, kind=kind):
            return head_accuracy(z_, t_, kind, reduce_sum)
        sharded = TwoShards()(accuracy, (z[:, a], target[a]), (z[:, b], target[b]))
        assert sharded.tolist() == pytest.approx(head_accuracy(z, target, kind).tolist(), abs=1e-6)

        def entropy(t_, reduce_sum, reduce_max, kind=kind):
            return label_entropy(t_, kind, 4, reduce_sum)
        sharded = TwoShards()(entropy, (target[a],), (target[b],))
        assert float(sharded) == pytest.approx(float(label_entropy(target, kind, 4)), rel=1e-9)
    features, fused = torch.randn(3, 40, 6, generator=gen), torch.randn(40, 6, generator=gen)
    # shard B holds each variable's extremes: its recorded counts already use the global bins
    features[:, a] = features[:, a].clamp(-0.5, 0.5)
    fused[a] = fused[a].clamp(-0.5, 0.5)

    def information(h, f, reduce_sum, reduce_max):
        return torch.cat(feature_information(h, f, 30, 2, reduce_sum, reduce_max))
    sharded = TwoShards()(information, (features[:, a], fused[a]), (features[:, b], fused[b]))
    assert sharded.tolist() == pytest.approx(torch.cat(feature_information(features, fused, 30, 2)).tolist(), rel=1e-9)


# ---------------------------------------------------------------- OGM-GE
def test_ogm_ge_coefficients_by_hand():
    s = torch.tensor([6.0, 2.0])                     # batch sums of the true-class probability
    rho = ratio_to_others(s)                         # 3 and 1/3
    k = ogm_coefficients(rho, alpha=0.1)
    assert k.tolist() == pytest.approx([1 - math.tanh(0.3), 1.0])
    three = ogm_coefficients(ratio_to_others(torch.tensor([4.0, 2.0, 1.0])), alpha=0.5)
    # rho = ((2 + 4) / 2, (0.5 + 2) / 2, (0.25 + 0.5) / 2): the middle modality leads the weakest too
    assert three.tolist() == pytest.approx([1 - math.tanh(1.5), 1 - math.tanh(0.625), 1.0])


def test_ogm_ge_noise_has_the_gradients_std():
    g = torch.randn(300, 200, generator=torch.Generator().manual_seed(0)) * 0.02 + 0.01
    k = 0.3
    noise = modulate_gradient(g, k, noise=True, generator=torch.Generator().manual_seed(1)) - k * g
    n = noise.numel()
    std = float(g.std()) + 1e-8
    # sample std of n Gaussians: relative sd 1/sqrt(2n); the mean: sd std/sqrt(n)
    assert float(noise.std()) == pytest.approx(std, rel=5 / math.sqrt(2 * n))
    assert abs(float(noise.mean())) < 5 * std / math.sqrt(n)
    assert torch.equal(modulate_gradient(g, k, noise=False), g * k)


def test_ogm_ge_touches_every_encoders_weight_matrices_only_in_its_epochs(ds):
    model = _model(ds)
    method = get_method("ogm_ge", model.modalities, alpha=0.1, start=1, end=2, noise=False)
    method.setup(model)
    method._coefficients = torch.tensor([0.5, 1.0, 0.25])
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    method.after_backward(model, StepContext(epoch=0))
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    method.after_backward(model, StepContext(epoch=2))
    for m, k in zip(model.modalities, [0.5, 1.0, 0.25]):
        weights = {id(w) for w in model.encoder_weights(m)}
        for p in model.encoders[m].parameters():
            assert torch.equal(p.grad, torch.full_like(p, k if id(p) in weights else 1.0))
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.head_parameters())
    # end=None: half the run's epochs (inclusive), as published (0..50 of 100)
    half = get_method("ogm_ge", model.modalities)
    assert half.active(StepContext(epoch=50, max_epochs=100)) and not half.active(StepContext(epoch=51, max_epochs=100))


# ---------------------------------------------------------------- OPM (features)
def test_opm_drop_probabilities_by_hand():
    q = opm_drop_probabilities(torch.tensor([3.0, 1 / 3]), q_base=0.5, lam=0.5)
    assert q.tolist() == pytest.approx([0.5 * (1 + 0.5 * math.tanh(2.0)), 0.0])
    assert float(opm_drop_probabilities(torch.tensor([9.0]), 0.9, 1.0)[0]) == 1.0   # clipped


def test_opm_feature_never_drops_during_warmup(ds):
    model = _model(ds)
    method = get_method("opm_feature", model.modalities, p_exe=1.0, warmup=3)
    method.setup(model)
    batch = ds.__getitems__(list(range(16)))
    plain = F.binary_cross_entropy_with_logits(model(batch), batch.target)
    loss_fn = lambda lg, y: F.binary_cross_entropy_with_logits(lg, y)  # noqa: E731
    assert torch.allclose(method.training_loss(model, batch, None, loss_fn, StepContext(epoch=2)), plain)
    method.training_loss(model, batch, None, loss_fn, StepContext(epoch=3))
    assert set(method.stats()) == {"q_env", "q_climate", "q_satellite"}


# ---------------------------------------------------------------- MILES
@pytest.mark.parametrize("v_full, v, expected", [
    (0.9, [0.85, 0.55], [0.5, 1.0]),            # u = (0.389, 0.056), delta 0.333 > tau: env leads
    (1.0, [0.5, 0.7], [1.0, 1.0]),              # u = (0.3, 0.5): delta = 0.2 <= tau
    (0.8, [0.7, 0.7, 0.7], [1.0, 1.0, 1.0]),    # balanced: delta 0
    (0.5, [0.95, 0.6], [1.0, 1.0]),             # u = (-0.2, -0.9): delta 0.7 but all negative
    (0.9, [0.88, 0.4, 0.5], [0.5, 1.0, 1.0]),   # M = 3: u = (0.5, 0.233, 0.289)
])
def test_miles_decision_table(v_full, v, expected):
    assert miles_lr_scales(v_full, torch.tensor(v), tau=0.2, mu=0.5).tolist() == expected


def test_miles_sets_learning_rates_without_compounding(ds):
    model = _model(ds)
    method = get_method("miles", model.modalities)
    method.setup(model)
    opt = torch.optim.AdamW(method.param_groups(model, None), lr=0.01)
    lr = lambda: {g["modality"]: g["lr"] for g in opt.param_groups}  # noqa: E731
    leading = {"env": 0.85, "climate": 0.4, "satellite": 0.45, "full": 0.9}
    for _ in range(2):
        method.epoch_end(leading, opt, StepContext())
        assert lr() == {"env": 0.005, "climate": 0.01, "satellite": 0.01, None: 0.01}
    method.epoch_end({"env": 0.7, "climate": 0.7, "satellite": 0.7, "full": 0.8}, opt, StepContext())
    assert set(lr().values()) == {0.01}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


# ---------------------------------------------------------------- MLA
def test_rls_projector_by_hand():
    r = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)   # |r|^2 = 9
    p = rls_projector_update(torch.eye(3, dtype=torch.float64), r, alpha=0.1)
    expected = torch.eye(3, dtype=torch.float64) - torch.outer(r, r) / 9.1
    assert torch.allclose(p, expected / torch.linalg.matrix_norm(expected))
    assert torch.allclose(p @ r, 0.1 / 9.1 * r / torch.linalg.matrix_norm(expected))


def test_mla_projection_makes_the_head_gradient_orthogonal_to_the_previous_modalitys_feature():
    gen = torch.Generator().manual_seed(0)
    r_prev, r_cur = torch.randn(16, generator=gen, dtype=torch.float64) * 3, torch.randn(16, generator=gen,
                                                                                         dtype=torch.float64) * 3
    alpha = 0.1
    p = rls_projector_update(torch.eye(16, dtype=torch.float64), r_prev, alpha)
    p = rls_projector_update(p, r_cur, alpha)
    grad = torch.randn(5, 16, generator=gen, dtype=torch.float64)
    projected = project_gradient(grad, p)
    cos_before = (grad @ r_prev).norm() / (grad.norm() * r_prev.norm())
    cos_after = (projected @ r_prev).norm() / (projected.norm() * r_prev.norm())
    # what is left of r_prev is alpha / (alpha + |r_prev|^2) of it (here about 1e-3)
    assert float(cos_after) < 2 * alpha / (alpha + float(r_prev @ r_prev)) < float(cos_before) / 50
    assert float((projected @ r_cur).norm() / (projected.norm() * r_cur.norm())) < 0.01


def test_mla_step_records_features_from_the_second_update_on(ds):
    model = _model(ds, fusion="entropy")
    batch = ds.__getitems__(list(range(16)))
    loss_fn = lambda lg, y: F.binary_cross_entropy_with_logits(lg, y)  # noqa: E731
    with torch.no_grad():
        r = {m: model.encode_modality(batch, m)[0].double().mean(dim=0) for m in model.modalities}
    for project in (False, True):
        method = get_method("mla", model.modalities, project=project)
        method.setup(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)   # lr 0: features stay what they were
        ctx = StepContext(batch_index=2, n_batches=4)
        method.manual_step(model, batch, None, loss_fn, opt, lambda loss: loss.backward(), ctx)
        assert method.n_updates_ == 3
        if not project:   # the published runs: the projector never changes
            assert torch.equal(method.projector_, torch.eye(8, dtype=torch.float64))
    alpha = 0.1 ** 1.5                                      # 0.1^(1 + b / N_b)
    # the run's first update (env) is neither recorded nor projected, as published
    expected = rls_projector_update(torch.eye(8, dtype=torch.float64), r["climate"], alpha)
    expected = rls_projector_update(expected, r["satellite"], alpha)
    assert torch.allclose(method.projector_, expected, atol=1e-6)


# ---------------------------------------------------------------- CGGM
def test_cggm_coefficients_on_a_constructed_history():
    history = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.5, 0.2], [0.5, 0.6, 0.3]])
    prev = torch.zeros(3)
    expected = [[0.5, 0.7, 0.8], [(0.3 - 0.1) / 0.3, (0.3 - 0.2) / 0.3, 1.0], [2.0, 0.0, 0.0]]
    for acc, want in zip(history, expected):
        assert cggm_coefficients(acc, prev).tolist() == pytest.approx(want, abs=1e-6)
        prev = acc
    b, cos = torch.tensor([0.5, -2.0]), torch.tensor([0.2, 0.5])
    assert float(cggm_direction_loss(b, cos)) == pytest.approx(((0.5 - 0.1) + (2.0 + 1.0)) / 2)


def test_cggm_scales_encoder_gradients_and_clips(ds):
    model = _model(ds)
    method = get_method("cggm", model.modalities, rho=1.3, clip=None)
    parts = method.setup(model)
    assert len(list(parts.parameters())) == 6
    method.coefficients_ = torch.tensor([0.5, 1.0, -0.2])
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    method.after_backward(model, StepContext())
    for m, b in zip(model.modalities, [0.5, 1.0, -0.2]):
        assert all(torch.allclose(p.grad, torch.full_like(p, 1.3 * b)) for p in model.encoders[m].parameters())
    clipped = get_method("cggm", model.modalities, clip=0.8)
    clipped.setup(model)
    clipped.coefficients_ = torch.ones(3)
    clipped.after_backward(model, StepContext())
    assert float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))) == pytest.approx(0.8, rel=1e-4)


def test_cggm_history_through_the_loss(ds):
    model = _model(ds)
    method = get_method("cggm", model.modalities)
    method.setup(model)
    batch = ds.__getitems__(list(range(20)))
    loss_fn = lambda lg, y: F.binary_cross_entropy_with_logits(lg, y)  # noqa: E731
    method.training_loss(model, batch, None, loss_fn, StepContext())
    a1 = method.previous_accuracy_.clone()
    assert torch.allclose(method.coefficients_, cggm_coefficients(a1, torch.zeros(3)))
    loss = method.training_loss(model, batch, None, loss_fn, StepContext())
    loss.backward()   # the direction term reaches the fused head, not the auxiliary heads' weights
    assert all(model.heads[i].weight.grad is not None for i in range(3))


# ---------------------------------------------------------------- MNL
def test_mnl_reduces_to_cross_entropy_when_omega_is_zero():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 7, 4, generator=gen) * 2        # M = 3, B = 7, C = 4
    fused = z.mean(dim=0)
    y = torch.randint(0, 4, (7,), generator=gen)
    term, mask = negative_learning_term(z, fused, y, omega=0.0)
    by_hand = 0.0
    for b in range(7):
        wrong = max((c for c in range(4) if c != y[b]), key=lambda c: float(fused[b, c]))
        margins = [float(z[m, b, y[b]] - z[m, b, wrong]) for m in range(3)]
        p_true = [float(torch.softmax(z[m, b], 0)[y[b]]) for m in range(3)]
        d = max(range(3), key=lambda m: margins[m])
        if d == max(range(3), key=lambda m: p_true[m]):
            by_hand += sum(float(F.cross_entropy(z[w, b:b + 1], y[b:b + 1])) for w in range(3) if w != d)
    assert float(term) == pytest.approx(by_hand / 7 / 4, rel=1e-5)
    assert 0 < float(mask.sum()) <= 7
    positive, _ = negative_learning_term(z, fused, y, omega=0.7)
    assert float(positive) > float(term)


def test_mnl_is_undefined_for_multilabel_at_config_time():
    method = get_method("mnl", ["a", "b"])
    with pytest.raises(ConfigError, match="'mnl' is not defined for a multilabel task"):
        method.configure_model({"architecture": "late_fusion"}, "multilabel")
    assert method.configure_model({"architecture": "late_fusion"}, "multiclass")["fusion"] == "mean"
    assert "mnl" not in list_methods("multilabel")


# ---------------------------------------------------------------- AMSS
def test_amss_keeps_the_asked_share_of_channels():
    g = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    mask = channel_mask(g, keep=0.35, generator=torch.Generator().manual_seed(1))
    assert int((mask > 0).sum()) == math.ceil(10 * 0.35) and set(mask.unique().tolist()) <= {0.0, 1.0}
    # AMSS+: each kept channel scaled by 1 / (pi_c + 1/C)
    plus = channel_mask(g, keep=0.5, unbiased=True, generator=torch.Generator().manual_seed(1))
    pi = (g ** 2).sum(dim=1) / (g ** 2).sum()
    kept = plus > 0
    assert int(kept.sum()) == 5
    assert torch.allclose(plus[kept], 1 / (pi[kept] + 0.1))
    # channels without gradient are only drawn once the others are exhausted
    sparse = torch.zeros(10, 4)
    sparse[[2, 7]] = 1.0
    assert bool((channel_mask(sparse, keep=0.2) > 0)[[2, 7]].all())


def test_amss_keep_fractions_by_hand():
    keep = amss_keep_fractions(torch.tensor(1.0), torch.tensor([0.2, 1.0, 0.6]), torch.tensor([1.0, 2.0, 1.0]), 0.5)
    r = torch.tensor([1.3, 0.25, 0.9])
    assert keep.tolist() == pytest.approx((1 - torch.softmax(r / 0.5, 0)).clamp(0.1, 0.9).tolist())
    assert amss_keep_fractions(torch.tensor(0.1), torch.tensor([0.2, 1.0]), torch.ones(2), 0.2).tolist() == [0.5, 0.5]
    assert float(label_entropy(torch.tensor([0, 0, 1, 1]), "multiclass", 3)) == pytest.approx(math.log(2))


def test_amss_masks_every_encoder_weight(ds):
    model = _model(ds)
    method = get_method("amss", model.modalities)
    method._keep = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    method.after_backward(model, StepContext())
    for m, k in zip(model.modalities, [0.3, 0.5, 0.9]):
        for w in model.encoder_weights(m):
            assert int((w.grad.abs().sum(dim=1) > 0).sum()) == math.ceil(w.shape[0] * k)


# ---------------------------------------------------------------- M-SAM
def test_msam_takes_the_sam_step_on_the_dominant_term_only():
    theta = torch.tensor([1.0, -2.0])
    w = torch.nn.Parameter(theta.clone())
    loss = lambda v: v[0] ** 2 + 3 * v[1] ** 2 + v[0] * v[1]  # noqa: E731
    grad = lambda v: torch.tensor([2 * v[0] + v[1], 6 * v[1] + v[0]])  # noqa: E731
    phi = torch.tensor([0.2, 0.7, 0.1])      # dominant: the second modality
    d, r = 1, 0.05

    def closure():
        value = loss(w)
        value.backward()
        return value.detach()

    sam_gradient([w], closure, float(phi[d]), r)
    g_dominant = phi[d] * grad(theta)                       # grad(phi_d L)(theta)
    eps = r * g_dominant / g_dominant.norm()
    expected = phi[d] * grad(theta + eps) + (phi.sum() - phi[d]) * grad(theta)
    assert torch.allclose(w.grad, expected, atol=1e-6)
    assert torch.equal(w.detach(), theta)                  # parameters restored before the step
    torch.optim.SGD([w], lr=0.1).step()
    assert torch.allclose(w.detach(), theta - 0.1 * expected, atol=1e-6)


def test_shapley_matrix_is_exact():
    for n in (2, 3, 4):
        subsets, w = all_coalitions(n), shapley_matrix(n)      # the exact Shapley map M-SAM uses
        v = torch.rand(2 ** n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
        phi = w @ v
        assert float(phi.sum()) == pytest.approx(float(v[-1] - v[0]))      # efficiency
        additive = subsets.double() @ torch.arange(1.0, n + 1, dtype=torch.float64)
        assert (w @ additive).tolist() == pytest.approx(list(range(1, n + 1)))   # additive game
    assert normalise_shares(torch.tensor([0.3, 0.1])).tolist() == pytest.approx([0.75, 0.25])
    assert normalise_shares(torch.tensor([-0.3, 0.1])).tolist() == [0.5, 0.5]


# ---------------------------------------------------------------- ARM
def _h(*p):
    return -sum(v * math.log(v) for v in p if v > 0)


def test_arm_information_by_hand():
    # X, Y binary with P(X = Y) = 3/4: H(X) = H(Y) = log 2, H(X, Y) = h(3/8, 3/8, 1/8, 1/8)
    nmi = normalised_mutual_information(torch.tensor([[3.0, 1.0], [1.0, 3.0]]))
    assert float(nmi) == pytest.approx(2 * (2 * math.log(2) - _h(3 / 8, 3 / 8, 1 / 8, 1 / 8)) / (2 * math.log(2)))
    assert float(normalised_mutual_information(torch.ones(3, 4))) == pytest.approx(0.0, abs=1e-12)
    # Z = 0: Y = X (uniform); Z = 1: X, Y independent, uniform. Counts [x, y, z]
    t = torch.zeros(2, 2, 2)
    t[0, 0, 0] = t[1, 1, 0] = 2.0
    t[:, :, 1] = 1.0
    # given Z: H(X|Z) = H(Y|Z) = log 2; H(X, Y|Z) = (log 2 + log 4) / 2
    expected = (2 * math.log(2) - 1.5 * math.log(2)) / (2 * math.log(2))
    assert float(normalised_conditional_mutual_information(t)) == pytest.approx(expected)


def test_arm_feature_information_matches_the_published_histogram_estimate():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(2, 50, 6, generator=gen, dtype=torch.float64)
    fused = h[0] + 0.5 * torch.randn(50, 6, generator=gen, dtype=torch.float64)
    nmi, ncmi = feature_information(h, fused, mi_bins=30, cmi_bins=2)
    # the published estimate: numpy's 2-D histogram over the flattened (sample, channel) pairs
    for m in range(2):
        joint = np.histogram2d(h[m].flatten().numpy(), fused.flatten().numpy(), bins=30)[0]
        p = joint / joint.sum()
        px, py = p.sum(axis=1), p.sum(axis=0)
        mi = sum(p[i, j] * math.log(p[i, j] / (px[i] * py[j])) for i in range(30) for j in range(30) if p[i, j] > 0)
        assert float(nmi[m]) == pytest.approx(2 * mi / (_h(*px) + _h(*py)), rel=1e-9)
    assert float(nmi[0]) > float(nmi[1])
    # NCMI(h_0; f | h_1) from a 2-bin histogram, the conditional entropies as H(A, Z) - H(Z)
    joint = np.histogramdd(torch.stack([h[0].flatten(), fused.flatten(), h[1].flatten()], dim=1).numpy(), bins=2)[0]
    p = joint / joint.sum()
    hz = _h(*p.sum(axis=(0, 1)).ravel())
    hx_z, hy_z, hxy_z = _h(*p.sum(axis=1).ravel()) - hz, _h(*p.sum(axis=0).ravel()) - hz, _h(*p.ravel()) - hz
    assert float(ncmi[0]) == pytest.approx((hx_z + hy_z - hxy_z) / (hx_z + hy_z), rel=1e-9)


def test_arm_weights_by_hand():
    # M = 2: c_a = p_fused nmi_a + p_v (nmi_a - ncmi_a); the weights are c_other / c_self
    c = arm_contributions(torch.tensor(0.5), torch.tensor([0.8, 0.4]), torch.tensor([0.6, 0.2]),
                          torch.tensor([0.1, 0.1]))
    assert c.tolist() == pytest.approx([0.5 * 0.6 + 0.4 * 0.5, 0.5 * 0.2 + 0.8 * 0.1])
    assert arm_weights(c).tolist() == pytest.approx([0.18 / 0.5, 0.5 / 0.18])
    # M = 3: mean of the others' probabilities, mean of the others' contributions
    c3 = arm_contributions(torch.tensor(1.0), torch.tensor([0.9, 0.6, 0.3]), torch.tensor([0.4, 0.2, 0.1]),
                           torch.tensor([0.2, 0.1, 0.0]))
    assert c3.tolist() == pytest.approx([0.4 + 0.45 * 0.2, 0.2 + 0.6 * 0.1, 0.1 + 0.75 * 0.1])
    assert arm_weights(torch.tensor([0.6, 0.3, 0.1])).tolist() == pytest.approx([0.2 / 0.6, 0.35 / 0.3, 0.45 / 0.1])
    assert arm_weights(torch.tensor([0.6, -0.1])).tolist() == [1.0, 1.0]      # our guard


def test_arm_trains_on_weighted_features_and_keeps_its_projection_fixed(ds):
    model = _model(ds, fusion="concat")
    method = get_method("arm", model.modalities)
    projection = method.setup(model)
    before = projection.weight.clone()
    batch = ds.__getitems__(list(range(40)))
    loss = method.training_loss(model, batch, None, lambda z, y: F.binary_cross_entropy_with_logits(z, y.float()),
                                StepContext())
    loss.backward()
    w = torch.tensor([method.stats()[f"w_{m}"] for m in model.modalities])
    out = model.forward_unimodal(batch)
    expected = F.binary_cross_entropy_with_logits(
        model.fuse(model.unimodal_logits(out.features * w.view(-1, 1, 1).float()), out.available), batch.target.float())
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert not torch.allclose(w, torch.ones(3, dtype=w.dtype))
    assert projection.weight.grad is None and torch.equal(projection.weight, before)
    assert all(p.grad is not None for p in model.encoders["satellite"].parameters() if p.requires_grad)


# ---------------------------------------------------------------- registry and parameters
def test_every_method_rejects_invalid_parameters():
    bad = {"alpha": -1.0, "start": 1.5, "end": -2, "noise": "yes", "q_base": 1.5, "lam": -0.1, "p_exe": 2.0,
           "warmup": -1, "tau": -0.5, "mu": 0.0, "project": 3, "rho": 0.0, "clip": -1.0, "eps": 0.0,
           "clamp": 0.0, "omega": -1.0, "temperature": 0.0, "unbiased": None, "radius": -0.05,
           "mi_bins": 1, "cmi_bins": 1.5}
    for name in list_methods():
        cls = method_class(name)
        assert set(cls._parameter_constraints) == set(cls.param_names())
        for param in cls._parameter_constraints:
            with pytest.raises(InvalidParameterError, match=f"The '{param}' parameter of {cls.__name__} must be"):
                get_method(name, ["a", "b"], **{param: bad[param]})
        with pytest.raises(InvalidParameterError, match="unexpected parameter 'nope'"):
            get_method(name, ["a", "b"], nope=1)
    with pytest.raises(InvalidParameterError, match="Unknown balancing method 'ogm'; valid names are"):
        get_method("ogm", ["a", "b"])
    with pytest.raises(InvalidParameterError, match="at least 2"):
        get_method("ogm_ge", ["a"])


def test_architecture_and_fusion_checks():
    with pytest.raises(ConfigError, match="'ogm_ge' needs model.architecture in \\['late_fusion'\\]"):
        get_method("ogm_ge", ["a", "b"]).configure_model({"architecture": "token"}, "multilabel")
    with pytest.raises(ConfigError, match="'mla' works with model.fusion in \\['entropy'\\]"):
        get_method("mla", ["a", "b"]).configure_model({"architecture": "late_fusion", "fusion": "sum"}, "multiclass")
    assert get_method("msam", ["a", "b"]).configure_model({"architecture": "token", "fusion": None},
                                                          "multilabel") == {"architecture": "token"}


def test_state_dict_round_trip(ds):
    model = _model(ds)
    method = get_method("cggm", model.modalities)
    method.setup(model)
    method.previous_accuracy_ = torch.tensor([0.1, 0.2, 0.3])
    method.coefficients_ = torch.tensor([1.0, 0.5, 2.0])
    other = get_method("cggm", model.modalities)
    other.setup(model)
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.previous_accuracy_, method.previous_accuracy_)
    assert torch.equal(other.coefficients_, method.coefficients_)
