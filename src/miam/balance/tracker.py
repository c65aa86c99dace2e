"""Per-modality validation scores in, MIAM weights out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from miam._validation import Interval, OptionalOf, Options, Pair, Parameterised
from miam.balance import functional as F
from miam.errors import InvalidParameterError
from miam.masking.strategies import LAMBDA


class ImbalanceTracker(Parameterised):
    """Keeps each modality's unimodal validation score per epoch and turns it into w.

    rho_s says how strong a modality is against the others, rho_d how fast its score
    still moves; a strong, settled modality gets w > 1 and is masked more.  Before two
    epochs of scores exist, rho = 1 and w = 1.

    Args:
        modalities: names, in the order of the weights.
        lambda_s: the exponent of rho_s (the paper uses one lambda for both).
        lambda_d: the exponent of rho_d (None: ``lambda_s``); kept as given, the weights
            use :attr:`lambda_d_`.
        eps: added to each |score change| before the geometric mean (score units).
        window: epochs over which |change| is averaged (1 = the one-epoch difference).
        clamp: optional (low, high) bounds on w.
        baseline: subtracted from every score before rho_s (floored at ``eps``), e.g. 0.5,
            the chance level of AUROC; ours, 0 reproduces the paper. Ratios of raw AUROCs
            between 0.5 and 1 are compressed (0.6 vs 0.7 gives rho_s 0.93 vs 1.08), so rho_d
            then dominates w; above chance the same scores give 0.71 vs 1.41.
        derivative: ``diff`` (the paper: mean |one-epoch change| over ``window``) or ``slope``
            (|least-squares slope| over ``window + 1`` epochs, which averages noise out);
            :func:`miam.balance.functional.score_change`.
        noise_floor: z; with z > 0, d_m is at least z times the sd of its own estimate under
            no movement, from the standard error of each unimodal validation score (pass
            ``standard_errors`` to :meth:`update`); 0 (the paper) turns it off. A change
            within the score's noise then says nothing about which modality is settled.

    Examples:
        >>> t = ImbalanceTracker(["env", "sat"], lambda_s=1.0, lambda_d=1.0)
        >>> t.update({"env": 0.80, "sat": 0.60}).tolist()
        [1.0, 1.0]
        >>> w = t.update({"env": 0.81, "sat": 0.70})
        >>> bool(w[0] > 1 > w[1])
        True
    """

    _parameter_constraints = {
        "lambda_s": Interval(0, None),
        "lambda_d": OptionalOf(Interval(0, None)),
        "eps": Interval(0, None, closed="neither"),
        "window": Interval(1, None, integer=True),
        "clamp": OptionalOf(Pair(Interval(0, 1, closed="right"), Interval(1, None))),
        "baseline": Interval(None, None),
        "derivative": Options(frozenset(F.DERIVATIVES)),
        "noise_floor": Interval(0, None),
    }

    def __init__(
        self,
        modalities: Sequence[str],
        lambda_s: float = LAMBDA,
        lambda_d: float | None = None,
        eps: float = 1e-3,
        window: int = 1,
        clamp: tuple[float, float] | None = None,
        baseline: float = 0.0,
        derivative: str = "diff",
        noise_floor: float = 0.0,
    ) -> None:
        modalities = list(modalities)
        if len(modalities) < 2:
            raise InvalidParameterError(f"ImbalanceTracker needs >= 2 modalities, got {modalities}.")
        self.modalities = modalities
        self.lambda_s, self.lambda_d, self.eps, self.window = lambda_s, lambda_d, eps, window
        self.clamp, self.baseline, self.derivative, self.noise_floor = clamp, baseline, derivative, noise_floor
        self._validate_params()
        m = len(modalities)
        self.history_ = torch.empty(0, m, dtype=torch.float64)
        self.rho_s_ = torch.ones(m, dtype=torch.float64)
        self.rho_d_ = torch.ones(m, dtype=torch.float64)
        self.weights_ = torch.ones(m, dtype=torch.float64)

    @property
    def lambda_d_(self) -> float:
        """The exponent of rho_d the weights use: ``lambda_d``, or ``lambda_s`` when that is None."""
        return self.lambda_s if self.lambda_d is None else self.lambda_d

    @property
    def scores_(self) -> Tensor | None:
        return self.history_[-1] if len(self.history_) else None

    def update(self, scores: Mapping[str, float], standard_errors: Mapping[str, float] | None = None) -> Tensor:
        """Record one epoch of unimodal scores (and, for ``noise_floor``, their standard
        errors on the validation set); return the new weights [M]."""
        missing = [m for m in self.modalities if m not in scores]
        if missing:
            raise InvalidParameterError(f"ImbalanceTracker.update: no score for {missing}; got {list(scores)}.")
        s = torch.tensor([float(scores[m]) for m in self.modalities], dtype=torch.float64)
        if not bool(torch.isfinite(s).all()):
            raise InvalidParameterError(f"ImbalanceTracker.update: non-finite scores {dict(zip(self.modalities, s.tolist()))}.")
        self.history_ = torch.cat([self.history_, s.unsqueeze(0)])
        floor = None
        if self.noise_floor > 0:
            if standard_errors is None or any(m not in standard_errors for m in self.modalities):
                raise InvalidParameterError(f"ImbalanceTracker.update: noise_floor={self.noise_floor} needs the "
                                            f"standard error of every score {self.modalities}; got {standard_errors}.")
            se = torch.tensor([float(standard_errors[m]) for m in self.modalities], dtype=torch.float64)
        if len(self.history_) >= 2:
            if self.noise_floor > 0:
                floor = self.noise_floor * F.change_noise(se, len(self.history_), self.window, self.derivative)
            self.rho_s_ = F.score_ratio(s - self.baseline, floor=self.eps)
            self.rho_d_ = F.change_ratio(self.history_, self.eps, self.window, self.derivative, floor)
            self.weights_ = F.imbalance_weights(self.rho_s_, self.rho_d_, float(self.lambda_s), float(self.lambda_d_),
                                                self.clamp)
        return self.weights_.clone()

    def as_dict(self) -> dict[str, dict[str, float]]:
        """Latest s, rho_s, rho_d and w per modality (for logs)."""
        s = self.scores_
        return {
            m: {
                "score": float("nan") if s is None else float(s[i]),
                "rho_s": float(self.rho_s_[i]),
                "rho_d": float(self.rho_d_[i]),
                "w": float(self.weights_[i]),
            }
            for i, m in enumerate(self.modalities)
        }

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).clone() for k in ("history_", "rho_s_", "rho_d_", "weights_")}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        for k in ("history_", "rho_s_", "rho_d_", "weights_"):
            setattr(self, k, state[k].clone().to(torch.float64))
