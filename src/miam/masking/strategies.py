"""The masking strategies of ALGORITHM.md: each a distribution over [0,1]^M.

A strategy only draws the per-modality masking probabilities p; turning p into a
token mask is :func:`miam.masking.functional.token_mask`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from miam._validation import Interval, OptionalOf, Parameterised
from miam.errors import InvalidParameterError, ShapeError
from miam.masking import functional as F


#: MIAM's exponent of rho_s, and of rho_d unless set apart: the paper's one lambda, default 1
LAMBDA = 1.0


class MaskingStrategy(Parameterised):
    """Base class: draws ``p`` of shape [B, M], one column per modality.

    By default one p is drawn per training step and shared by the batch (the
    reference behaviour); ``per_sample=True`` draws one p per sample.

    Subclasses write their parameters as keyword arguments of ``__init__`` with their
    defaults, store them unchanged, declare ``_parameter_constraints`` and implement
    ``_draw(n, generator, device)``.
    ``feedback`` says what the trainer hands the strategy after each epoch:
    ``"weights"`` (MIAM's w), ``"scores"`` (OPM's unimodal scores) or None.
    """

    _base_arguments = ("self", "modalities", "per_sample")
    feedback: ClassVar[str | None] = None
    min_modalities: ClassVar[int] = 1
    name: ClassVar[str] = ""

    def __init__(self, modalities: Sequence[str], per_sample: bool = False) -> None:
        owner = type(self).__name__
        modalities = list(modalities)
        if len(modalities) < self.min_modalities:
            raise InvalidParameterError(
                f"{owner} needs at least {self.min_modalities} modalities, got {len(modalities)}: {modalities}."
            )
        if len(set(modalities)) != len(modalities):
            raise InvalidParameterError(f"{owner}: modality names must be unique, got {modalities}.")
        if not isinstance(per_sample, bool):
            raise InvalidParameterError(f"The 'per_sample' parameter of {owner} must be a bool. Got {per_sample!r}.")
        self._validate_params()
        self.modalities = modalities
        self.per_sample = per_sample

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Masking probabilities ``[batch_size, M]`` on the generator's device (CPU without one)."""
        if batch_size < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size}.")
        n = batch_size if self.per_sample else 1
        p = self._draw(n, generator, generator.device if generator is not None else torch.device("cpu"))
        return p if self.per_sample else p.expand(batch_size, -1)

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        raise NotImplementedError

    def set_weights(self, w: Tensor) -> None:
        """Hand the strategy new per-modality weights; static strategies ignore them."""
        if self.feedback != "weights":
            return
        w = torch.as_tensor(w, dtype=torch.float32).detach().cpu()
        if w.shape != (self.n_modalities,):
            raise ShapeError(f"Expected weights [{self.n_modalities}] for {self.modalities}, got {list(w.shape)}.")
        if not bool((w > 0).all()) or not bool(torch.isfinite(w).all()):
            raise InvalidParameterError(f"Weights must be finite and > 0, got {w.tolist()}.")
        self.weights_ = w

    def set_scores(self, s: Tensor) -> None:
        """Hand the strategy per-modality validation scores (for score-driven strategies)."""
        if self.feedback != "scores":
            return
        s = torch.as_tensor(s, dtype=torch.float32).detach().cpu()
        if s.shape != (self.n_modalities,):
            raise ShapeError(f"Expected scores [{self.n_modalities}] for {self.modalities}, got {list(s.shape)}.")
        self.scores_ = s

    def state_dict(self) -> dict[str, Any]:
        return {k: v.clone() for k, v in vars(self).items() if k.endswith("_") and isinstance(v, Tensor)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v.clone())


class Constant(MaskingStrategy):
    """p_m = q for every modality (q_base). With one token per modality this is ``dropout``.

    Args:
        modalities: the modality (or group) names, one column of p each.
        q: the share of each modality's tokens hidden.
        per_sample: one p per sample instead of one per step.
    """

    name = "constant"
    _parameter_constraints = {"q": Interval(0, 1)}

    def __init__(self, modalities: Sequence[str], *, q: float = 0.75, per_sample: bool = False) -> None:
        self.q = q
        super().__init__(modalities, per_sample)

    def _draw(self, n, generator, device):
        return torch.full((n, self.n_modalities), float(self.q), device=device)


class ModalityDropout(MaskingStrategy):
    """p_m ~ Bernoulli(q) independently: whole modalities on or off (all-hidden allowed).

    Args:
        modalities: the modality (or group) names, one column of p each.
        q: the probability that a modality is hidden whole.
        per_sample: one p per sample instead of one per step.
    """

    name = "dropout"
    _parameter_constraints = {"q": Interval(0, 1)}

    def __init__(self, modalities: Sequence[str], *, q: float = 0.1, per_sample: bool = False) -> None:
        self.q = q
        super().__init__(modalities, per_sample)

    def _draw(self, n, generator, device):
        u = torch.rand((n, self.n_modalities), generator=generator, device=device)
        return (u < self.q).float()


class UniformLine(MaskingStrategy):
    """u ~ U(0,1), p_m = u for all m: the cube's diagonal (the paper's "Uniform")."""

    name = "uniform_line"

    def _draw(self, n, generator, device):
        u = torch.rand((n, 1), generator=generator, device=device)
        return u.expand(n, self.n_modalities).contiguous()


class UniformHypercube(MaskingStrategy):
    """p_m ~ U(0,1) independently (the paper's "Uniform hypercube")."""

    name = "uniform_hypercube"

    def _draw(self, n, generator, device):
        return torch.rand((n, self.n_modalities), generator=generator, device=device)


class Dirichlet(MaskingStrategy):
    """p ~ Dirichlet(alpha * 1_M): the sample is the masking vector, on sum p = 1.

    Args:
        modalities: the modality (or group) names, one column of p each.
        alpha: the concentration of every modality.
        per_sample: one p per sample instead of one per step.
    """

    name = "dirichlet"
    _parameter_constraints = {"alpha": Interval(0, None, closed="neither")}

    def __init__(self, modalities: Sequence[str], *, alpha: float = 1.0, per_sample: bool = False) -> None:
        self.alpha = alpha
        super().__init__(modalities, per_sample)

    def _draw(self, n, generator, device):
        alpha = torch.full((self.n_modalities,), float(self.alpha), device=device)
        return F.sample_dirichlet(n, alpha, generator)


class CornerPriority(MaskingStrategy):
    """The corner-anchored product-Beta mixture with w_m = 1 (the paper's "Beta hypercube").

    Args:
        modalities: the modality (or group) names, one column of p each (at least 2).
        kappa: the concentration of the Beta components around their corners.
        priority: the mixture weight of each of the two priority corners.
        per_sample: one p per sample instead of one per step.
    """

    name = "corner_priority"
    min_modalities = 2
    _parameter_constraints = {
        "kappa": Interval(0, None, closed="neither"),
        "priority": Interval(0, 0.5, closed="right"),
    }

    def __init__(self, modalities: Sequence[str], *, kappa: float = F.KAPPA, priority: float = F.PRIORITY,
                 per_sample: bool = False) -> None:
        self.kappa = kappa
        self.priority = priority
        super().__init__(modalities, per_sample)

    def current_weights(self) -> Tensor:
        return torch.ones(self.n_modalities)

    def _draw(self, n, generator, device):
        w = self.current_weights().to(device)
        return F.sample_beta_mixture(n, w, float(self.kappa), float(self.priority), generator)


class Miam(CornerPriority):
    """MIAM: the corner mixture with w_m = rho_s^lambda_s / rho_d^lambda_d from validation.

    The weights come from :class:`miam.balance.ImbalanceTracker` through
    :meth:`set_weights`; before any, w = 1 and MIAM is ``corner_priority``.
    ``lambda_s``/``lambda_d`` are carried here so one config names them all; the
    trainer builds the tracker from them.

    Args:
        modalities: the modality (or group) names, one column of p each (at least 2).
        kappa: the concentration of the Beta components around their corners.
        priority: the mixture weight of each of the two priority corners.
        lambda_s: the exponent of rho_s.
        lambda_d: the exponent of rho_d (None: ``lambda_s``, the paper's one lambda).
        per_sample: one p per sample instead of one per step.
    """

    name = "miam"
    feedback = "weights"
    _parameter_constraints = {
        **CornerPriority._parameter_constraints,
        "lambda_s": Interval(0, None),
        "lambda_d": OptionalOf(Interval(0, None)),
    }

    def __init__(self, modalities: Sequence[str], *, kappa: float = F.KAPPA, priority: float = F.PRIORITY,
                 lambda_s: float = LAMBDA, lambda_d: float | None = None, per_sample: bool = False) -> None:
        self.lambda_s = lambda_s
        self.lambda_d = lambda_d
        super().__init__(modalities, kappa=kappa, priority=priority, per_sample=per_sample)

    def current_weights(self) -> Tensor:
        return getattr(self, "weights_", torch.ones(self.n_modalities))


class OPM(MaskingStrategy):
    """On-the-fly prediction modulation as an input mask: drop strong modalities more.

    rho_m = mean_{j != m} s_m / s_j; p_m ~ Bernoulli(q (1 + lambda tanh(rho_m - 1)) [rho_m > 1]);
    before any score, p_m = q.

    Args:
        modalities: the modality (or group) names, one column of p each (at least 2).
        q: the base drop probability.
        lam: the slope of the drop probability in tanh(rho_m - 1).
        per_sample: one p per sample instead of one per step.
    """

    name = "opm"
    feedback = "scores"
    min_modalities = 2
    _parameter_constraints = {"q": Interval(0, 1), "lam": Interval(0, None)}

    def __init__(self, modalities: Sequence[str], *, q: float = 0.5, lam: float = 0.5,
                 per_sample: bool = False) -> None:
        self.q = q
        self.lam = lam
        super().__init__(modalities, per_sample)

    def drop_probabilities(self) -> Tensor | None:
        s = getattr(self, "scores_", None)
        if s is None:
            return None
        s = s.clamp_min(1e-12)
        m = self.n_modalities
        ratio = s.unsqueeze(1) / s.unsqueeze(0)            # [m, j] = s_m / s_j
        rho = (ratio.sum(dim=1) - 1.0) / (m - 1)            # drop the j = m term (ratio 1)
        q = self.q * (1 + self.lam * torch.tanh(rho - 1)) * (rho > 1)
        return q.clamp(0.0, 1.0)

    def _draw(self, n, generator, device):
        q = self.drop_probabilities()
        if q is None:
            return torch.full((n, self.n_modalities), float(self.q), device=device)
        u = torch.rand((n, self.n_modalities), generator=generator, device=device)
        return (u < q.to(device)).float()


_STRATEGIES: dict[str, type[MaskingStrategy]] = {
    cls.name: cls for cls in (Constant, ModalityDropout, UniformLine, UniformHypercube,
                               Dirichlet, CornerPriority, OPM, Miam)
}

#: Names used in the paper's tables, mapped to ours.
ALIASES = {"uniform": "uniform_line", "beta_hypercube": "corner_priority", "modality_dropout": "dropout"}


def list_strategies() -> list[str]:
    """The registered strategy names."""
    return list(_STRATEGIES)


def get_strategy(name: str, modalities: Sequence[str], per_sample: bool = False, **params: Any) -> MaskingStrategy:
    """Build a masking strategy by name; ``params`` are the keyword arguments of its class.

    Raises:
        InvalidParameterError: an unknown name, or a parameter the strategy does not take
            or with a value outside its constraint.

    Examples:
        >>> s = get_strategy("miam", ["env", "climate", "satellite"], kappa=10.0, lambda_s=3.0)
        >>> s.sample(4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3])
    """
    cls = strategy_class(name)
    cls.check_params(params)
    return cls(modalities, per_sample=per_sample, **params)


def strategy_class(name: str) -> type[MaskingStrategy]:
    """The class registered under ``name`` (or a paper alias); an unknown name lists the valid ones.

    Examples:
        >>> sorted(strategy_class("dropout")._parameter_constraints)
        ['q']
    """
    key = ALIASES.get(name, name)
    if key not in _STRATEGIES:
        close = [n for n in _STRATEGIES if n[:3] == str(name)[:3]]
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidParameterError(
            f"Unknown masking strategy {name!r}; valid names are {list_strategies()}.{hint}"
        )
    return _STRATEGIES[key]


def expected_mean(w: Tensor, kappa: float) -> Tensor:
    """E[p_m] of the corner mixture under symmetric corner weights (ALGORITHM.md's closed form)."""
    w = torch.as_tensor(w, dtype=torch.float64)
    return 0.5 / (1 + kappa / w) + 0.5 * kappa * w / (kappa * w + 1)


__all__ = ["LAMBDA", "MaskingStrategy", "get_strategy", "strategy_class", "list_strategies", "expected_mean", "ALIASES"]
