"""Remedies trained end to end on MNIST-1D through ``python -m bench fit``."""

from __future__ import annotations

import pytest

from bench.configs import remedy_path
from bench.results import read_series
from models.activations import resolve
from models.remedies.normalization import critical_moments
from tests.bench.runs import fit_record

# A depth-20 network trained for 3 epochs on 2,000 MNIST-1D examples (60 SGD steps): deep
# enough that sigmoid and the Gaussian stay at chance under xavier, and short enough that
# one run takes seconds on a quiet CPU.
SMALL = [
    "--model.depth=20",
    "--model.width=64",
    "--trainer.max_epochs=3",
    "--data.max_train_samples=2000",
    "--monitor.every_n_steps=50",
]


def baseline_trainer(tmp_path_factory, data_dir, name: str, arguments):
    """Return a function that trains the xavier network once per activation.

    ``arguments(activation)`` gives the fit flags; ``name`` prefixes the results folder.
    """
    records: dict[str, dict] = {}

    def baseline(activation: str) -> dict:
        if activation not in records:
            results = tmp_path_factory.mktemp(f"{name}_{activation}")
            records[activation] = fit_record(results, data_dir, *arguments(activation))
        return records[activation]

    return baseline


@pytest.fixture(scope="module")
def xavier_baseline(tmp_path_factory, data_dir):
    """Return a function that trains (once per activation) the xavier network at SMALL."""
    return baseline_trainer(
        tmp_path_factory,
        data_dir,
        "xavier",
        lambda activation: [f"--model.activation={activation}", *SMALL],
    )


@pytest.mark.parametrize("activation", ["sigmoid", "gaussian"])
def test_xavier_stays_at_chance(activation, xavier_baseline):
    record = xavier_baseline(activation)
    # Measured: test accuracy 0.096 (sigmoid) and 0.106 (gaussian); the gradient ratio at
    # init is 1.4e-12 (sigmoid) and 4.4e-8 (gaussian).
    assert record["metrics"]["test/acc"] < 0.15
    assert record["signal"]["init"]["grad_ratio"] < 1e-6


AGNOSTIC_SIGMOID = (
    "sigmoid's critical point at sigma_b2 = 0.1 has q* = 46, so agnostic_batch holds every "
    "pre-activation at a standard deviation of 6.8, where most sigmoid units are saturated, "
    "and batch statistics in 18 layers make the gradients explode: gradient ratio 9e2 at "
    "init, test accuracy 0.11 against 0.10 for xavier"
)
FIXED_RESIDUAL_SIGMOID = (
    "each branch adds sigmoid's mean of 0.5 to the residual stream, which drifts to q = 6 by "
    "the last block; the gradient ratio rises from 1e-12 to 1.5e-2 but 60 steps reach only "
    "0.11 against 0.10 for xavier"
)

# (activation, remedy, margin over xavier's test accuracy). Each margin is about half the
# gain measured with this file's SMALL settings on 2 loaded CPU cores, seed 0.
REMEDY_CASES = [
    # Measured: 0.42 against xavier's 0.10.
    ("sigmoid", "dks", 0.15),
    # Measured: 0.44 (0.38 at the transform's default C''(1) = 0.3).
    ("sigmoid", "tat", 0.15),
    # Measured: 0.18.
    ("sigmoid", "skipinit", 0.04),
    # Measured: 0.18.
    ("sigmoid", "scaled_ws", 0.04),
    pytest.param(
        "sigmoid",
        "fixed_residual",
        0.04,
        marks=pytest.mark.xfail(reason=FIXED_RESIDUAL_SIGMOID, strict=False),
    ),
    pytest.param(
        "sigmoid",
        "agnostic_batch",
        0.04,
        marks=pytest.mark.xfail(reason=AGNOSTIC_SIGMOID, strict=True),
    ),
    # Measured: 0.42 against xavier's 0.25, because tanh under xavier trains slowly at this
    # depth instead of staying at chance.
    ("tanh", "dks", 0.08),
    # Measured: 0.41 against xavier's 0.11.
    ("gaussian", "dks", 0.15),
    # Measured: 0.15.
    ("gaussian", "skipinit", 0.02),
]


@pytest.mark.parametrize(("activation", "remedy", "margin"), REMEDY_CASES)
def test_remedy_beats_xavier(activation, remedy, margin, tmp_path, data_dir, xavier_baseline):
    """Train a remedy where xavier stays at chance (or trains slowly, for tanh) and compare.

    Two remedies do not beat xavier at this size, for reasons the xfail marks state.
    agnostic_batch did not beat xavier on any of sigmoid, tanh or the Gaussian: the
    Gaussian's q* = 2.5 gives gradient ratio 5e4 at init and accuracy 0.09, tanh 0.26
    against 0.25. scaled_ws on the Gaussian reaches 0.09, because its gain 1 / sqrt(Var phi)
    = 3.6 puts the Gaussian in the chaotic phase (gradient ratio 5e2 at init).
    """
    baseline = xavier_baseline(activation)
    record = fit_record(
        tmp_path,
        data_dir,
        f"--model.activation={activation}",
        f"--config={remedy_path(remedy)}",
        *SMALL,
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/acc"] > baseline["metrics"]["test/acc"] + margin


def test_agnostic_batch_holds_q_during_training(tmp_path, data_dir):
    record = fit_record(
        tmp_path,
        data_dir,
        "--model.activation=tanh",
        "--model.depth=6",
        "--model.width=32",
        "--trainer.max_epochs=1",
        "--data.max_train_samples=500",
        "--monitor.every_n_steps=1",
        f"--config={remedy_path('agnostic_batch')}",
    )
    _, q_target = critical_moments(resolve("tanh"), 0.1)
    series = read_series(tmp_path / record["run_id"])
    q = series[series["quantity"] == "q"]["value"]
    assert len(q) > 10
    assert q.between(0.95 * q_target, 1.05 * q_target).all()


# Measured through ``python -m bench sweep pilot`` (depth 100, width 256, 20 epochs, SGD with
# momentum 0.9 at lr 1e-3, seed 0), test accuracy; tat from separate runs of the same
# settings at the preset's target C''(1) = 1:
#
#             xavier  dks    tat    fixed_residual  skipinit  scaled_ws  agnostic_batch
#   sigmoid   0.089   0.664  0.636  0.175           0.276     0.503      0.089
#   tanh      0.453   0.660  0.664  0.351           0.390     0.117      0.231
#   gaussian  0.098   0.654  0.680  0.232           0.299     0.106      diverged
#
# tanh under xavier sits on its edge of chaos (sigma_w2 = 1, sigma_b2 = 0) and trains, so
# only dks and tat clear the margin there. scaled_ws's gain 1 / sqrt(Var phi(z)) gives chi_1 =
# E[phi'(z)^2] / Var phi(z) > 1 for tanh and the Gaussian, chaotic over 100 layers without
# residual branches (gradient ratio at init 2.8e3 and 2.4e18). agnostic_batch compounds the
# gradient growth of batch statistics over 99 layers (gradient ratio at init 2e17 for
# sigmoid, 9e2 for tanh, overflow for the Gaussian).
PILOT_MISSES = {
    ("sigmoid", "fixed_residual"): "measured 0.175 against 0.089, a gain of 0.086",
    ("sigmoid", "agnostic_batch"): "measured 0.089, gradient ratio 2e17 at init",
    ("tanh", "fixed_residual"): "measured 0.351 against xavier's 0.453",
    ("tanh", "skipinit"): "measured 0.390 against xavier's 0.453",
    ("tanh", "scaled_ws"): "measured 0.117, chaotic: gradient ratio 2.8e3 at init",
    ("tanh", "agnostic_batch"): "measured 0.231 against xavier's 0.453",
    ("gaussian", "scaled_ws"): "measured 0.106, chaotic: gradient ratio 2.4e18 at init",
    ("gaussian", "agnostic_batch"): "diverged at step 2",
}
PILOT_CASES = [
    pytest.param(
        activation,
        preset,
        marks=[pytest.mark.xfail(reason=PILOT_MISSES[activation, preset], strict=True)]
        if (activation, preset) in PILOT_MISSES
        else [],
    )
    for activation in ("sigmoid", "tanh", "gaussian")
    for preset in ("dks", "tat", "fixed_residual", "skipinit", "scaled_ws", "agnostic_batch")
]


@pytest.fixture(scope="module")
def pilot_baseline(tmp_path_factory, data_dir):
    """Return a function that trains (once per activation) the xavier network at pilot size."""
    return baseline_trainer(tmp_path_factory, data_dir, "pilot_xavier", pilot_args)


def pilot_args(activation: str) -> list[str]:
    return [
        "--model.depth=100",
        "--model.width=256",
        "--trainer.max_epochs=20",
        "--optimizer.lr=1e-3",
        f"--model.activation={activation}",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("activation", "preset"), PILOT_CASES)
def test_remedy_beats_xavier_at_pilot_size(activation, preset, tmp_path, data_dir, pilot_baseline):
    baseline = pilot_baseline(activation)
    remedy = fit_record(
        tmp_path, data_dir, *pilot_args(activation), f"--config={remedy_path(preset)}"
    )
    assert remedy["metrics"]["test/acc"] > baseline["metrics"]["test/acc"] + 0.1
