"""ARM: asymmetric reinforcing against multimodal representation bias (Gao et al., 2025)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from miam._validation import Interval
from miam.models.late_fusion import LateFusionOutput
from miam.balance.methods.base import BalancingMethod, StepContext
from miam.balance.methods.functional import local_sum, positive_scores, unimodal_scores


def _entropy(counts: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Entropy (nats) of the marginal of a count table over ``dims``, per leading entry."""
    kept = tuple(d for d in range(1, counts.ndim) if d not in dims)
    c = counts.sum(dim=kept) if kept else counts
    p = c.flatten(1) / c.flatten(1).sum(dim=1, keepdim=True).clamp_min(1e-300)
    return -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1)


def normalised_mutual_information(joint: Tensor) -> Tensor:
    """NMI = 2 I(X; Y) / (H(X) + H(Y)) from joint counts ``[..., bx, by]`` (0 where both
    entropies are 0); I = H(X) + H(Y) - H(X, Y).

    Examples:
        >>> float(normalised_mutual_information(torch.tensor([[5.0, 0.0], [0.0, 5.0]])))  # Y = X
        1.0
    """
    table = joint.reshape(-1, *joint.shape[-2:]).double()
    hx, hy, hxy = _entropy(table, (1,)), _entropy(table, (2,)), _entropy(table, (1, 2))
    denominator = hx + hy
    nmi = torch.where(denominator > 0, 2 * (hx + hy - hxy) / denominator.clamp_min(1e-300), torch.zeros_like(hx))
    return nmi.reshape(joint.shape[:-2])


def normalised_conditional_mutual_information(joint: Tensor) -> Tensor:
    """I(X; Y | Z) / (H(X|Z) + H(Y|Z)) from joint counts ``[..., bx, by, bz]`` (0 where the
    denominator is 0); H(A|Z) = H(A, Z) - H(Z), I(X; Y | Z) = H(X|Z) + H(Y|Z) - H(X, Y|Z).
    As published, there is no factor 2: the value is at most 1/2, reached when Y = X.

    Examples:
        >>> t = torch.zeros(2, 2, 2); t[0, 0, 0] = t[1, 1, 0] = t[0, 0, 1] = t[1, 1, 1] = 1.0
        >>> float(normalised_conditional_mutual_information(t))  # Y = X, Z independent
        0.5
    """
    table = joint.reshape(-1, *joint.shape[-3:]).double()
    hz = _entropy(table, (3,))
    hx_z = _entropy(table, (1, 3)) - hz
    hy_z = _entropy(table, (2, 3)) - hz
    hxy_z = _entropy(table, (1, 2, 3)) - hz
    denominator = hx_z + hy_z
    ncmi = torch.where(denominator > 1e-12, (hx_z + hy_z - hxy_z) / denominator.clamp_min(1e-300),
                       torch.zeros_like(hz))
    return ncmi.reshape(joint.shape[:-3])


def bin_codes(values: Tensor, bins: int, low: Tensor, high: Tensor) -> Tensor:
    """Each value's bin among ``bins`` equal bins spanning [low, high] per row (the last bin
    closed, as ``numpy.histogram``), ``[K, N]`` -> long ``[K, N]``."""
    width = (high - low).clamp_min(1e-12).unsqueeze(1)
    return ((values - low.unsqueeze(1)) / width * bins).floor().long().clamp(0, bins - 1)


def feature_information(features: Tensor, fused: Tensor, mi_bins: int, cmi_bins: int,
                        reduce_sum: Callable[[Tensor], Tensor] = local_sum,
                        reduce_max: Callable[[Tensor], Tensor] = local_sum) -> tuple[Tensor, Tensor]:
    """Histogram estimates of NMI(h_m; f) and of mean_{j != m} NCMI(h_m; f | h_j), each ``[M]``.

    ``features`` ``[M, B, d]`` and ``fused`` ``[B, d]`` are flattened to B d values each,
    paired by (sample, channel); each variable is cut into equal bins over its range
    (``mi_bins`` for the NMI, ``cmi_bins`` for the conditional one). Ranges are maxima
    and counts sums over DDP ranks (``reduce_max``, ``reduce_sum``), so every rank gets
    the estimate of the global batch.
    """
    m = features.shape[0]
    values = torch.cat([features.detach().flatten(1), fused.detach().reshape(1, -1)]).double()   # [M + 1, N]
    high = reduce_max(torch.cat([values.amax(dim=1), -values.amin(dim=1)]))
    high, low = high[:m + 1], -high[m + 1:]
    mi_codes, cmi_codes = bin_codes(values, mi_bins, low, high), bin_codes(values, cmi_bins, low, high)
    offsets = torch.arange(m, device=values.device).unsqueeze(1)
    mi_index = offsets * mi_bins ** 2 + mi_codes[:m] * mi_bins + mi_codes[m]
    mi_counts = torch.bincount(mi_index.flatten(), minlength=m * mi_bins ** 2).double()
    pairs = torch.arange(m * m, device=values.device).view(m, m, 1)
    cmi_index = (pairs * cmi_bins ** 3 + cmi_codes[:m].unsqueeze(1) * cmi_bins ** 2
                 + cmi_codes[m] * cmi_bins + cmi_codes[:m].unsqueeze(0))                  # [m, j, N]
    cmi_counts = torch.bincount(cmi_index.flatten(), minlength=m * m * cmi_bins ** 3).double()
    counts = reduce_sum(torch.cat([mi_counts, cmi_counts]))
    nmi = normalised_mutual_information(counts[:m * mi_bins ** 2].view(m, mi_bins, mi_bins))
    ncmi = normalised_conditional_mutual_information(counts[m * mi_bins ** 2:].view(m, m, cmi_bins, cmi_bins, cmi_bins))
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=values.device)
    return nmi, (ncmi * off_diagonal).sum(dim=1) / (m - 1)


def arm_contributions(p_fused: Tensor, p: Tensor, nmi: Tensor, ncmi: Tensor) -> Tensor:
    """c_m = p_fused NMI_m + mean_{j != m} p_j (NMI_m - NCMI_m), ``[M]``.

    With M = 2 this is the published pcmi_a = p_fused nmi_a + p_v ii_a: each modality's
    interaction information ii_m = NMI_m - NCMI_m is weighted by the other modality's
    true-class probability.

    Examples:
        >>> c = arm_contributions(torch.tensor(0.5), torch.tensor([0.8, 0.4]), torch.tensor([0.6, 0.2]),
        ...                       torch.tensor([0.1, 0.1]))
        >>> [round(v, 6) for v in c.tolist()]   # 0.5 * 0.6 + 0.4 * 0.5, 0.5 * 0.2 + 0.8 * 0.1
        [0.5, 0.18]
    """
    p = p.double()
    others = (p.sum() - p) / (len(p) - 1)
    return p_fused.double() * nmi.double() + others * (nmi.double() - ncmi.double())


def arm_weights(contributions: Tensor) -> Tensor:
    """Fusion weights w_m = mean_{j != m} c_j / c_m (M = 2: the published c_other / c_self),
    so the modality that contributes less is scaled up and the leading one down; all 1
    when some c_m is <= 0 or not finite (our guard: the published code has none).

    Examples:
        >>> arm_weights(torch.tensor([0.6, 0.3])).tolist()
        [0.5, 2.0]
    """
    c = contributions.double()
    if not bool(torch.isfinite(c).all()) or bool((c <= 0).any()):
        return torch.ones_like(c)
    return (c.sum() - c) / (len(c) - 1) / c


class ARM(BalancingMethod):
    """ARM: weight each modality's feature in the fusion by the others' contribution over its own.

    Per batch, with h_m the encoder features ``[B, d]`` and f = P [h_1; ...; h_M] a fixed
    random projection of their concatenation to d channels:

    * p_m, p_fused: the batch mean of the true-class probability of z_m and of the fused
      (unweighted) logits (multi-label: (1 + s_m) / 2 as for the other methods);
    * NMI_m = NMI(h_m; f) from a 2-D histogram of the B d (sample, channel) pairs with
      ``mi_bins`` bins; NCMI_m = mean_{j != m} NCMI(h_m; f | h_j) with ``cmi_bins`` bins;
    * c_m = p_fused NMI_m + mean_{j != m} p_j (NMI_m - NCMI_m) (:func:`arm_contributions`)
      and w_m = mean_{j != m} c_j / c_m (:func:`arm_weights`);
    * the loss is the task loss of the fusion of the weighted features w_m h_m (detached
      weights): the weak modalities are reinforced, the dominant one kept.

    M modalities: NCMI conditions on each other modality in turn and averages; the other
    modality's probability becomes the mean over the others; w_m the mean of the others'
    contributions over m's. With M = 2 each is the published two-modality quantity.

    Follows the authors' MMPretrain implementation (Gao-xiyuan/ARM:
    ``mmpretrain/models/heads/linear_head.py``, ``necks/gap.py``, ``necks/MI_tool.py``).
    Departures:

    * evaluation fuses with unit weights (the published head computes the weights at test
      time too, from the test labels); the weights act in training only;
    * the published fused logits are fc(fc_out[w_1 h_1; w_2 h_2]) with a classifier fc
      shared with the unimodal predictions; ours are the late-fusion ``concat`` head over
      [w_m h_m] (one linear layer, whose block m gives z_m);
    * f: the published neck's ``fc_out`` projection receives no gradient, so it stays at
      its initialisation; ours is frozen explicitly (a method part, checkpointed). p_fused
      is the fused model's probability (published: the shared classifier applied to f);
    * the conditional entropies are H(A, Z) - H(Z) (the published ``conditional_entropy``
      divides the joint table along the wrong axis, a broadcasting slip);
    * weights fall back to 1 when a contribution is <= 0 (possible: NMI - NCMI can be
      negative), where the published ratio would flip or blow up a feature;
    * ``train_armr.py`` holds a different variant that resamples training samples by a
      per-sample contribution each epoch; it is not implemented.

    Under DDP the histogram ranges (maxima) and counts and the probability sums are
    all-reduced, so every rank computes the weights of the global batch.

    Args:
        mi_bins: histogram bins per variable for NMI (30, as published).
        cmi_bins: histogram bins per variable for the conditional NMI (2, as published).
    """

    name = "arm"
    fusions = ("concat",)
    _parameter_constraints = {
        "mi_bins": Interval(2, None, integer=True),
        "cmi_bins": Interval(2, None, integer=True),
    }

    def __init__(self, modalities: Sequence[str], *, mi_bins: int = 30, cmi_bins: int = 2) -> None:
        self.mi_bins = mi_bins
        self.cmi_bins = cmi_bins
        super().__init__(modalities)

    def setup(self, model):
        super().setup(model)
        self._projection = nn.Linear(self.n_modalities * model.d_model, model.d_model)
        self._projection.requires_grad_(False)
        return self._projection

    def weights(self, model: nn.Module, out: LateFusionOutput, target: Tensor, ctx: StepContext) -> Tensor:
        """The fusion weights w ``[M]`` of this batch (see the class docstring)."""
        kind = model.task.kind
        with torch.no_grad():
            logits = torch.cat([out.logits.unsqueeze(0), out.unimodal])                    # [1 + M, B, C]
            s = unimodal_scores(logits, target, kind, ctx.reduce_sum)
            if kind == "multiclass":
                s = s / ctx.reduce_sum(s.new_tensor(float(len(target))))
            p = positive_scores(s, kind)
            fused = self._projection(out.features.permute(1, 0, 2).reshape(len(target), -1))
            nmi, ncmi = feature_information(out.features, fused, self.mi_bins, self.cmi_bins,
                                            ctx.reduce_sum, ctx.reduce_max)
            c = arm_contributions(p[0], p[1:], nmi, ncmi)
            w = arm_weights(c)
        self._stats = {**{f"w_{m}": v for m, v in zip(self.modalities, w.tolist())},
                       **{f"c_{m}": v for m, v in zip(self.modalities, c.tolist())}}
        return w

    def training_loss(self, model, batch, visible, loss_fn, ctx):
        out = model.forward_unimodal(batch, visible)
        w = self.weights(model, out, batch.target, ctx).to(out.features)
        logits = model.fuse(model.unimodal_logits(out.features * w.view(-1, 1, 1)), out.available)
        return loss_fn(logits, batch.target)
