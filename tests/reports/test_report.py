"""``python -m bench report`` on a small real results folder: tables, figures, HTML pages."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from bench import report as report_module
from bench.__main__ import main
from bench.report import (
    TRAINED_ACCURACY,
    cell_statistics,
    deepest_trained,
    format_table,
    select_learning_rates,
)
from bench.results import read_record, read_records, write_json_atomic

ACTIVATIONS = ("sigmoid", "tanh")
REMEDIES = ("baseline", "orthogonal")
SEEDS = (0, 1)
NOTEBOOKS = ("accuracy", "gradients", "jacobian", "theory")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def fit_small_grid(results: Path, data_dir: str) -> None:
    """Train every (activation, remedy, seed) of the small grid at depth 3, width 16."""
    for activation in ACTIVATIONS:
        for remedy in REMEDIES:
            for seed in SEEDS:
                code = main(
                    [
                        "fit",
                        f"--config=bench/configs/remedies/{remedy}.yaml",
                        f"--results={results}",
                        f"--data.data_dir={data_dir}",
                        *QUIET,
                        f"--model.activation={activation}",
                        "--model.depth=3",
                        "--model.width=16",
                        "--trainer.max_epochs=2",
                        "--data.max_train_samples=400",
                        "--monitor.every_n_steps=2",
                        f"--seed_everything={seed}",
                    ]
                )
                assert code == 0


@pytest.fixture(scope="session")
def results(tmp_path_factory, data_dir) -> Path:
    """A results folder of 8 finished runs (2 activations x 2 remedies x 2 seeds)."""
    folder = tmp_path_factory.mktemp("results") / "runs"
    with pytest.MonkeyPatch.context() as patch:
        # LightningCLI warns when sys.argv carries pytest's own arguments beside ``args``.
        patch.setattr(sys, "argv", ["bench"])
        fit_small_grid(folder, data_dir)
    return folder


def run_report(results: Path, out: Path, *extra: str) -> int:
    return main(["report", f"--results={results}", f"--out={out}", *extra])


@pytest.fixture(scope="session")
def report(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert run_report(results, out) == 0
    return out


@pytest.fixture(scope="session")
def partial(results, tmp_path_factory) -> Path:
    """Baseline runs only, one of them diverged, one running, none with a Jacobian spectrum."""
    folder = tmp_path_factory.mktemp("partial") / "runs"
    for run_dir in sorted(results.glob("*-baseline-*")):
        shutil.copytree(run_dir, folder / run_dir.name)
    runs = sorted(folder.iterdir())

    # Records from before the Jacobian monitor have no entry, and a run that stopped early
    # may have neither snapshot.
    for run_dir in runs:
        edit_record(run_dir, jacobian=None)
    edit_record(runs[0], jacobian={"init": None, "end": None})
    edit_record(runs[1], status="diverged", diverged_at_step=3, metrics={})
    running = folder / "tanh-baseline-d3-w16-s9-running"
    shutil.copytree(runs[-1], running)
    edit_record(running, status="running", run_id=running.name, metrics={})
    return folder


def edit_record(run_dir: Path, **changes) -> None:
    path = run_dir / "record.json"
    record = json.loads(path.read_text()) | changes
    write_json_atomic(path, record)


@pytest.fixture(scope="session")
def partial_report(partial, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("partial_report")
    assert run_report(partial, out) == 0
    return out


class ImageCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")


def image_sources(page: Path) -> list[str]:
    collector = ImageCollector()
    collector.feed(page.read_text())
    return collector.sources


def expected_statistics(results: Path, column: str) -> pd.DataFrame:
    """Mean and sample std over seeds, recomputed from the records with numpy."""
    frame = read_records(results)
    frame = frame[frame["status"].isin(["completed", "diverged"])]
    rows = []
    for (activation, remedy), group in frame.groupby(["activation", "remedy"]):
        values = pd.to_numeric(group[column], errors="coerce").dropna().to_numpy(dtype=float)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        rows.append((activation, remedy, float(np.mean(values)), std, len(group)))
    return pd.DataFrame(rows, columns=["activation", "remedy", "mean", "std", "n"])


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("accuracy_depth3", "test/acc"),
        ("grad_ratio_init_depth3", "signal/grad_ratio_init"),
        ("grad_ratio_end_depth3", "signal/grad_ratio_end"),
    ],
)
def test_report_table_numbers_match_records(report, results, table, column):
    written = pd.read_csv(report / "tables" / f"{table}.csv")
    expected = expected_statistics(results, column)
    merged = expected.merge(written, on=["activation", "remedy"], suffixes=("", "_csv"))
    assert len(merged) == len(ACTIVATIONS) * len(REMEDIES)
    np.testing.assert_allclose(merged["mean_csv"], merged["mean"], rtol=1e-12)
    np.testing.assert_allclose(merged["std_csv"], merged["std"], rtol=1e-12)
    assert (merged["n_csv"] == len(SEEDS)).all()
    assert (merged["n_diverged"] == 0).all()


def test_report_table_formats_written(report):
    for name in ("accuracy_depth3", "grad_ratio_init_depth3", "theory"):
        assert (report / "tables" / f"{name}.csv").exists()
        assert (report / "tables" / f"{name}.md").exists()
        latex = (report / "tables" / f"{name}.tex").read_text()
        assert "\\toprule" in latex
        assert "\\bottomrule" in latex


def test_report_markdown_bolds_row_best(report):
    stats = pd.read_csv(report / "tables" / "accuracy_depth3.csv")
    markdown = (report / "tables" / "accuracy_depth3.md").read_text()
    for activation, group in stats.groupby("activation"):
        (line,) = [row for row in markdown.splitlines() if row.startswith(f"| {activation} ")]
        winner = group.loc[group["mean"].idxmax()]
        cells = [cell.strip() for cell in line.strip("|").split("|")][1:]
        bold = [cell for cell in cells if cell.startswith("**")]
        assert len(bold) == 1
        assert bold[0].startswith(f"**{winner['mean']:.3f}")
        assert "[n=2]" in bold[0]


def test_report_figures_render_in_html(report):
    pages = [report / f"{name}.html" for name in NOTEBOOKS]
    sources = [source for page in pages for source in image_sources(page)]
    figures = sorted((report / "figures").glob("*.png"))
    expected = {"accuracy_vs_depth", "signal_propagation", "jacobian_histograms"}
    for activation in ACTIVATIONS:
        expected |= {f"grad_norm_heatmap_{activation}", f"phase_diagram_{activation}"}
    assert {figure.stem for figure in figures} == expected
    assert len(sources) == len(figures)
    for source in sources:
        prefix = "data:image/png;base64,"
        if source.startswith(prefix):
            pixels = image.imread(io.BytesIO(base64.b64decode(source[len(prefix) :])))
            assert pixels.shape[0] > 100
            assert pixels.shape[1] > 100
        else:
            assert (report / source).is_file(), source
    for figure in figures:
        assert figure.with_suffix(".svg").stat().st_size > 0


def test_report_pages_have_no_errors_or_code(report):
    for name in NOTEBOOKS:
        page = (report / f"{name}.html").read_text()
        assert "Traceback" not in page
        assert "import matplotlib" not in page
        assert not re.search(r"<script[^>]+src=", page)


def test_report_index_summarises_best_remedy(report, results):
    index = (report / "index.html").read_text()
    expected = expected_statistics(results, "test/acc")
    for activation, group in expected.groupby("activation"):
        ranked = group.sort_values("mean", ascending=False)
        best, other = ranked.iloc[0], ranked.iloc[1]
        margin = best["mean"] - other["mean"]
        sentence = (
            f"{activation} at depth 3: {best['remedy']} did best with test/acc "
            f"{best['mean']:.3f}, {margin:+.3f} over {other['remedy']}"
        )
        assert sentence in index
    for name in NOTEBOOKS:
        assert f'href="{name}.html"' in index


@pytest.mark.parametrize("moment", ["init", "end"])
def test_report_jacobian_table_matches_records(report, results, moment):
    records = [read_record(path.parent) for path in sorted(results.glob("*/record.json"))]
    expected = pd.DataFrame(
        {
            "activation": [record["params"]["activation"] for record in records],
            "remedy": [record["params"]["remedy"] for record in records],
            "value": [record["jacobian"][moment]["sv_mean"] for record in records],
        }
    )
    expected = expected.groupby(["activation", "remedy"])["value"].agg(["mean", "std", "size"])
    written = pd.read_csv(report / "tables" / f"jacobian_sv_mean_{moment}_depth3.csv")
    written = written.set_index(["activation", "remedy"]).loc[expected.index]
    np.testing.assert_allclose(written["mean"], expected["mean"], rtol=1e-12)
    np.testing.assert_allclose(written["std"], expected["std"], rtol=1e-12)
    assert (written["n"] == expected["size"]).all()


def test_report_theory_table_deepest_trained(report, results):
    theory = pd.read_csv(report / "tables" / "theory.csv")
    accuracy = expected_statistics(results, "test/acc")
    for activation in ACTIVATIONS:
        (row,) = theory[theory["activation"] == activation].itertuples()
        assert row.sigma_w2 == 1.0
        assert row.sigma_b2 == 0.0
        assert row.deepest_run == 3
        trained = (accuracy[accuracy["activation"] == activation]["mean"] >= 0.25).any()
        assert (row.deepest_trained == 3) if trained else math.isnan(row.deepest_trained)
    sigmoid = theory.set_index("activation").loc["sigmoid"]
    # sigmoid has phi'(x) <= 1/4, so chi_1 = sigma_w2 E[phi'^2] < 1/16 at sigma_w2 = 1.
    assert 0.0 < sigmoid["chi_1"] < 1.0 / 16.0
    assert sigmoid["predicted_depth"] == pytest.approx(6.0 * sigmoid["xi_c"], rel=1e-12)


def test_deepest_trained_threshold():
    runs = pd.DataFrame(
        {
            "activation": ["tanh"] * 4,
            "remedy": ["baseline"] * 4,
            "depth": [5, 5, 10, 10],
            "test/acc": [0.5, 0.3, 0.3, 0.1],
            "status": ["completed"] * 4,
        }
    )
    outcome = deepest_trained(runs, threshold=0.25).set_index("activation")
    # Depth 10 averages 0.2 over its two seeds, below the threshold; depth 5 averages 0.4.
    assert outcome.loc["tanh", "deepest_trained"] == 5
    assert outcome.loc["tanh", "deepest_run"] == 10
    assert TRAINED_ACCURACY == 0.25


def test_select_learning_rates_keeps_best_validation():
    runs = pd.DataFrame(
        {
            "activation": ["tanh"] * 4 + ["sigmoid"] * 3,
            "remedy": ["dks"] * 7,
            "depth": [100] * 7,
            "seed": [0, 0, 1, 1, 0, 0, 0],
            "lr": [1e-3, 1e-2, 1e-3, 1e-2, 1e-3, 1e-2, 1e-1],
            "val/acc": [0.5, 0.6, 0.7, 0.4, 0.1, 0.9, 0.3],
            "test/acc": [0.45, 0.55, 0.65, 0.35, 0.1, None, 0.2],
            "status": ["completed"] * 5 + ["diverged", "completed"],
        }
    )
    selected, notes = select_learning_rates(runs)
    # Per (activation, seed): tanh seed 0 at 1e-2, tanh seed 1 at 1e-3, and sigmoid at 1e-1,
    # since its diverged run at 1e-2 counts as the worst whatever validation accuracy it
    # recorded before diverging.
    assert selected["lr"].tolist() == [1e-2, 1e-3, 1e-1]
    assert notes == [
        "7 runs differ only in learning rate (0.001, 0.01, 0.1) among the recorded settings "
        "(remedy, activation, depth, width, init, optimizer, dataset, epochs, seed); each "
        "table keeps, per setting and seed, the rate with the highest final validation "
        "accuracy, and a diverged run counts as the worst."
    ]
    single = runs[runs["lr"] == 1e-3]
    selected_single, single_notes = select_learning_rates(single)
    assert selected_single.equals(single)
    assert single_notes == []


def test_format_table_marks_diverged_cell():
    runs = pd.DataFrame(
        {
            "depth": [5] * 4,
            "activation": ["sigmoid"] * 4,
            "remedy": ["baseline", "baseline", "orthogonal", "orthogonal"],
            "test/acc": [None, None, 0.3, 0.5],
            "status": ["diverged", "diverged", "completed", "completed"],
        }
    )
    stats = cell_statistics(runs, "test/acc")
    table = format_table(stats.drop(columns="depth"), style="markdown")
    assert table.loc["sigmoid", "baseline"] == "no value [n=2, 2 diverged]"
    # mean 0.4, sample std of (0.3, 0.5) = 0.1414.
    assert table.loc["sigmoid", "orthogonal"] == "**0.400 ± 0.141** [n=2]"


def test_report_empty_results_says_missing(tmp_path):
    empty = tmp_path / "runs"
    empty.mkdir()
    out = tmp_path / "out"
    assert run_report(empty, out) == 0
    index = (out / "index.html").read_text()
    assert "contains no run records yet" in index
    for name in NOTEBOOKS:
        page = (out / f"{name}.html").read_text()
        assert "Traceback" not in page
        assert "contains no run records yet" in page
    assert not (out / "tables").exists()


def test_report_partial_results_says_missing(partial_report, partial):
    index = (partial_report / "index.html").read_text()
    assert "Only one remedy (baseline) was run" in index
    assert "1 runs are still running" in index
    assert "tanh-baseline-d3-w16-s9-running" in index
    assert "1 runs diverged" in index

    accuracy = pd.read_csv(partial_report / "tables" / "accuracy_depth3.csv")
    assert accuracy["n"].sum() == 4
    assert accuracy["n_diverged"].sum() == 1
    assert "1 diverged" in (partial_report / "tables" / "accuracy_depth3.md").read_text()


def test_report_partial_jacobian_absence_noted(partial_report):
    page = (partial_report / "jacobian.html").read_text()
    assert "No record carries a Jacobian spectrum" in page
    assert "Traceback" not in page
    assert not list((partial_report / "tables").glob("jacobian_*"))
    assert not (partial_report / "figures" / "jacobian_histograms.png").exists()


def test_report_missing_folder_exit_code(tmp_path, capsys):
    code = run_report(tmp_path / "nowhere", tmp_path / "out")
    assert code == 2
    assert "error: --results" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_report_screenshot_not_blank(report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    screenshot = tmp_path / "page.png"
    page = report / "accuracy.html"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1280,1600",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = image.imread(screenshot)[..., :3]
    non_white = (pixels < 0.95).any(axis=-1).mean()
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    # Text and a table alone stay grey; the embedded figure adds many colours.
    assert non_white > 0.02
    assert colours > 50


def test_jacobian_histograms_skip_non_finite(results, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(results, folder)
    overflowed = sorted(folder.glob("*-baseline-*"))[0]
    record = read_record(overflowed)
    spectrum = record["jacobian"]["end"]
    spectrum["singular_values"] = [math.nan] * len(spectrum["singular_values"])
    edit_record(overflowed, jacobian=record["jacobian"])

    runs, _ = report_module.load_runs(folder)
    figure = report_module.plot_jacobian_histograms(runs)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    activation = record["params"]["activation"]
    assert f"{activation} / baseline\nzero or not finite at end" in titles
    assert sum("not finite" in title for title in titles) == 1
