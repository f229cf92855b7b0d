"""``python -m bench theory`` (bench.theory.main): tables, recommendation, plot and input errors."""

from __future__ import annotations

import bench.theory
from bench.theory import main
from models.networks import DeepMLP


def test_theory_cli_tanh_prints_critical_value(capsys):
    assert main(["--activation", "tanh", "--sigma-b2", "0", "0.05"]) == 0
    output = capsys.readouterr().out
    # The critical sigma_w2 of tanh at sigma_b2 = 0.05 is 1.7610.
    assert "1.761" in output
    assert "--model.init critical --model.sigma_b2 0.05" in output


def test_theory_cli_analyses_given_sigma_w2(capsys):
    assert main(["--activation", "sigmoid", "--sigma-b2", "0.1", "--sigma-w2", "2"]) == 0
    output = capsys.readouterr().out
    assert "sigma_w2 = 2" in output
    assert "ordered" in output


def test_theory_cli_unknown_activation_returns_2(capsys):
    assert main(["--activation", "no_such_unit"]) == 2
    captured = capsys.readouterr()
    assert "no_such_unit" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err


def test_theory_cli_negative_variance_returns_2(capsys):
    assert main(["--sigma-b2", "0.1", "-0.2"]) == 2
    assert "--sigma-b2 values must be finite and >= 0, got -0.2" in capsys.readouterr().err


def test_theory_cli_diverging_length_returns_2(capsys):
    assert main(["--activation", "relu", "--sigma-b2", "0", "--sigma-w2", "3"]) == 2
    assert "no fixed point" in capsys.readouterr().err


def test_theory_cli_without_critical_point(capsys):
    assert main(["--activation", "softplus", "--sigma-b2", "0.1"]) == 0
    assert "No critical initialisation for softplus" in capsys.readouterr().out


def test_theory_cli_writes_phase_diagram(tmp_path, capsys, monkeypatch):
    # A coarse grid keeps the test fast; the full grid only changes the resolution.
    monkeypatch.setattr(bench.theory, "PLOT_GRID", (12, 8))
    target = tmp_path / "phase.png"
    assert main(["--activation", "tanh", "--sigma-b2", "0.05", "--plot", str(target)]) == 0
    assert target.stat().st_size > 10_000
    assert str(target) in capsys.readouterr().out


def test_theory_cli_unwritable_plot_returns_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.theory, "PLOT_GRID", (4, 3))
    target = tmp_path / "missing" / "phase.png"
    assert main(["--sigma-b2", "0.05", "--plot", str(target)]) == 2
    assert "cannot save --plot" in capsys.readouterr().err


def test_theory_cli_shaping_matches_built_network(capsys):
    assert main(["--activation", "tanh", "--sigma-b2", "0.05", "--depth", "20"]) == 0
    output = capsys.readouterr().out
    dks = DeepMLP(40, 10, depth=20, width=8, activation="tanh", transform="dks")
    alpha = dks.activations()[0].alpha.item()
    agnostic = DeepMLP(40, 10, depth=20, width=8, norm="agnostic_batch", norm_target=1.5)
    mean = agnostic.hidden[0].norm.target_mean.item()
    assert "kernel shaping for a plain network of depth 20" in output
    assert f"{alpha:.4g}" in output
    assert f"mean {mean:.4g}" in output


def test_theory_cli_shaping_names_invalid_transform(capsys):
    assert main(["--activation", "softsign", "--sigma-b2", "0.05"]) == 0
    output = " ".join(capsys.readouterr().out.split())
    assert "transform 'tat' with activation 'softsign' is invalid" in output


def test_theory_cli_rejects_depth_one(capsys):
    assert main(["--depth", "1"]) == 2
    assert "--depth must be >= 2" in capsys.readouterr().err
