"""One way to declare and check parameters (scikit-learn's): explicit signatures, constraints
declared once per class, arguments stored as given (issue 17)."""

from __future__ import annotations

import inspect
import pydoc
import re
from pathlib import Path

import pytest

from miam.balance import ImbalanceTracker
from miam.balance.methods import list_methods, method_class
from miam.data.registry import build_dataset
from miam.data.synthetic import make_dataset
from miam.errors import ConfigError, InvalidParameterError
from miam.masking import list_strategies
from miam.masking.strategies import Miam, strategy_class
from miam.training.module import MiamModule

MODS = ["env", "climate", "satellite"]
CLASSES = [*(strategy_class(n) for n in list_strategies()), *(method_class(n) for n in list_methods()),
           ImbalanceTracker]


def own_parameters(cls) -> list[inspect.Parameter]:
    return [p for name, p in inspect.signature(cls).parameters.items() if name not in ("modalities", "per_sample")]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_signature_shows_every_parameter_with_its_default_and_each_has_a_constraint(cls):
    params = own_parameters(cls)
    assert [p.name for p in params] == cls.param_names()
    assert all(p.default is not p.empty and p.kind is not p.VAR_KEYWORD for p in params)
    assert set(cls._parameter_constraints) == set(cls.param_names())
    # the defaults themselves satisfy the constraints, and are stored unchanged
    built = cls(MODS)
    assert built.params == {p.name: p.default for p in params}


@pytest.mark.parametrize("cls", [c for c in CLASSES if c._parameter_constraints], ids=lambda c: c.__name__)
def test_every_argument_is_stored_as_given(cls):
    """A non-default value of each parameter comes back unchanged from ``params`` (sklearn's
    ``get_params``/``clone`` contract): constructors do not rewrite their arguments."""
    changed = {"q": 0.3, "alpha": 0.4, "kappa": 4, "priority": 0.5, "lambda_s": 3, "lambda_d": 2.0, "lam": 0.25,
               "start": 2, "end": 5, "noise": False, "q_base": 0.4, "p_exe": 0.5, "warmup": 1, "tau": 0.1, "mu": 0.3,
               "project": False, "rho": 1.1, "clip": None, "eps": 0.01, "clamp": [0.5, 2], "omega": 0.2,
               "temperature": 0.5, "unbiased": True, "radius": 0.1, "mi_bins": 10, "cmi_bins": 3, "window": 3,
               "baseline": 0.5, "derivative": "slope", "noise_floor": 1.0}
    if cls is not ImbalanceTracker and "clamp" in cls.param_names():
        changed["clamp"] = 2.0   # CGGM's bound on |B_m|
    given = {name: changed[name] for name in cls.param_names()}
    built = cls(MODS, **given)
    assert built.params == given and all(type(built.params[k]) is type(v) for k, v in given.items())


def test_help_shows_the_parameters_and_their_defaults():
    def shown(cls, *parameters):   # annotations are strings here: 'float'
        text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
        return all(re.search(rf"{name}: '?{re.escape(kind)}'? = {re.escape(default)}", text)
                   for name, kind, default in parameters)

    assert shown(Miam, ("kappa", "float", "10.0"), ("priority", "float", "0.25"), ("lambda_s", "float", "1.0"),
                 ("lambda_d", "float | None", "None"), ("per_sample", "bool", "False"))
    assert shown(method_class("ogm_ge"), ("alpha", "float", "0.1"), ("end", "int | None", "None"))
    assert shown(ImbalanceTracker, ("lambda_s", "float", "1.0"), ("derivative", "str", "'diff'"))


def test_the_tracker_keeps_lambda_d_none_and_computes_with_lambda_s():
    scores = [{"a": 0.6, "b": 0.7, "c": 0.8}, {"a": 0.65, "b": 0.72, "c": 0.9}, {"a": 0.7, "b": 0.73, "c": 0.91}]
    default, explicit = ImbalanceTracker(["a", "b", "c"], lambda_s=3.0), ImbalanceTracker(["a", "b", "c"], 3.0, 3.0)
    for s in scores:
        w, v = default.update(s), explicit.update(s)
    assert default.lambda_d is None and default.lambda_d_ == 3.0
    assert default.params["lambda_d"] is None and repr(default).endswith("lambda_s=3.0, lambda_d=None, eps=0.001, "
                                                                         "window=1, clamp=None, baseline=0.0, "
                                                                         "derivative='diff', noise_floor=0.0)")
    assert w.tolist() == v.tolist() and w.tolist() != ImbalanceTracker(["a", "b", "c"], 3.0, 1.0).update(s).tolist()


@pytest.mark.parametrize("name, bad, shown", [
    ("lambda_s", -1.0, r"a float in the range \[0, inf\]"),
    ("lambda_d", "x", r"None or a float in the range \[0, inf\]"),
    ("eps", 0.0, r"a float in the range \(0, inf\)"),
    ("window", 1.5, r"an int in the range \[1, inf\]"),
    ("clamp", (2.0, 4.0), r"None or a \(low, high\) pair with low a float in the range \(0, 1\] and high a "
                          r"float in the range \[1, inf\]"),
    ("baseline", float("nan"), r"a float in the range \[-inf, inf\]"),
    ("noise_floor", -2.0, r"a float in the range \[0, inf\]"),
])
def test_every_tracker_parameter_is_checked_against_its_constraint(name, bad, shown):
    with pytest.raises(InvalidParameterError, match=rf"The '{name}' parameter of ImbalanceTracker must be {shown}. "
                                                    rf"Got {re.escape(repr(bad))} instead\."):
        ImbalanceTracker(["a", "b"], **{name: bad})


def test_the_trainer_builds_the_tracker_from_the_strategy_and_the_masking_section():
    ds = make_dataset(seed=0, n_sites=60, n_species=3)

    def module(strategy, params, **masking):
        return MiamModule([s.to_dict() for s in ds.specs], ds.task.to_dict(),
                          model={"d_model": 8, "depth": 1, "heads": 2},
                          masking={"strategy": strategy, "params": params, **masking})

    miam = module("miam", {"lambda_s": 3.0}, eps=0.01, clamp=[0.5, 2.0], score_baseline="chance")
    assert miam.strategy.params["lambda_d"] is None
    assert (miam.tracker.lambda_s, miam.tracker.lambda_d, miam.tracker.lambda_d_) == (3.0, None, 3.0)
    assert (miam.tracker.eps, miam.tracker.clamp, miam.tracker.baseline) == (0.01, [0.5, 2.0], 0.5)
    plain = module("dropout", {"q": 0.2})
    assert plain.tracker.params == ImbalanceTracker(ds.modalities).params


def test_an_unknown_dataset_parameter_names_the_dataset_the_parameter_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"dataset 'synthetic' \(data.params\): unknown parameter\(s\) \['n_site'\]; "
                                          r"valid parameters are \['seed', 'n_sites', 'n_species', "):
        build_dataset("synthetic", n_site=300)



def test_the_strategy_table_of_the_docs_states_the_defaults_of_the_signatures():
    """docs/strategies.md restates each default: it must read what ``inspect.signature`` shows."""
    text = (Path(__file__).parents[1] / "docs" / "strategies.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \|[^|]*\| (.*) \|$", text, re.M))
    assert sorted(rows) == sorted(list_strategies())
    for name, cell in rows.items():
        stated = dict(re.findall(r"`(\w+)` \(([^)]*)\)", cell))
        defaults = {p.name: p.default for p in own_parameters(strategy_class(name))}
        assert sorted(stated) == sorted(defaults), name
        for param, value in stated.items():
            assert defaults[param] is None if value.startswith("None") else float(value) == defaults[param], (name, param)
