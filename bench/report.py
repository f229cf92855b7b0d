"""``python -m bench report``: compile a results folder into paper-style tables and figures.

The notebooks in ``reports/`` (jupytext percent files) are executed with papermill against a
results folder, rendered to HTML with nbconvert (code hidden unless ``--show-code``) and
linked from an index page that summarises which remedy did best for each nonlinearity.
The notebooks call the helpers in this module: they read the run records through
``bench.results`` only, write every table as LaTeX (booktabs), Markdown and CSV, and save
every figure as PNG and SVG.

Output layout under ``--out`` (default ``reports/_build``)::

    index.html, summary.md        the summary and links
    <notebook>.html               one rendered page per notebook
    notebooks/<notebook>.ipynb    the executed notebooks
    tables/<name>.{tex,md,csv}    CSV contains the numbers, tex and md the formatted cells
    figures/<name>.{png,svg}
"""

from __future__ import annotations

import argparse
import html
import logging
import math
import os
import shutil
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from bench.results import (
    STATUS_COMPLETED,
    STATUS_DIVERGED,
    STATUS_FAILED,
    STATUS_RUNNING,
    read_record,
    read_records,
    read_series,
)

log = logging.getLogger(__name__)

PROG = "python -m bench report"
# NOTE: the notebooks live in the repository, not in the installed package, so the default
# assumes an editable install or a run from a checkout; --notebooks points elsewhere.
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "reports"
DEFAULT_OUT = Path("reports/_build")
BASELINE = "baseline"
# Test accuracy a configuration must reach, averaged over seeds, to count as trained. The
# default datasets have 10 classes, so chance is 10%.
TRAINED_ACCURACY = 0.25
# sigma_w2 (weight variance times fan-in) of a square hidden layer under each baseline
# initialisation of models.remedies.init; every one of them sets biases to zero.
INIT_SIGMA_W2 = {"xavier": 1.0, "orthogonal": 1.0, "kaiming": 2.0}
RECORD_COLUMNS = (
    "run_id",
    "status",
    "remedy",
    "activation",
    "depth",
    "width",
    "init",
    "optimizer",
    "lr",
    "dataset",
    "seed",
    "test/acc",
    "signal/grad_ratio_init",
    "signal/grad_ratio_end",
    "signal/mean_saturation_init",
    "signal/mean_saturation_end",
    "diverged_at_step",
    "wall_time_s",
    "run_dir",
)
JACOBIAN_KEYS = ("sv_mean", "sv_std", "sv_max")
Best = Literal["max", "min", "one"]
Style = Literal["markdown", "latex", "html"]


# --- reading runs ------------------------------------------------------------------------


def load_runs(results_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Read the finished runs of a results folder and list what is missing or unfinished.

    Returns:
        The completed and diverged runs, one row per run with at least ``RECORD_COLUMNS``
        (running and failed runs are left out), and notes in plain sentences about empty
        folders, unfinished runs and records that could not be read.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return _empty_runs(), [f"The results folder {results_dir} does not exist."]
    try:
        runs = read_records(results_dir)
    except (ValueError, OSError) as error:
        return _empty_runs(), [f"The run records in {results_dir} could not be read: {error}"]
    if runs.empty:
        return _empty_runs(), [
            f"The results folder {results_dir} contains no run records yet: run "
            "`python -m bench fit` or `python -m bench sweep` with `--results` pointing here."
        ]

    runs = runs.reindex(columns=list(dict.fromkeys([*RECORD_COLUMNS, *runs.columns])))
    runs["remedy"] = runs["remedy"].fillna("unlabelled")
    is_finished = runs["status"].isin([STATUS_COMPLETED, STATUS_DIVERGED])
    finished, lr_notes = select_learning_rates(runs[is_finished])
    # Notes count the runs the tables use: a diverged run that lost to a better rate is out.
    notes = _status_notes(pd.concat([finished, runs[~is_finished]]))
    if finished.empty:
        notes.append("No run has finished, so the tables below are empty.")
    return finished.reset_index(drop=True), notes + lr_notes


# The recorded settings that, with the learning rate, tell one configuration from another.
SETTING_COLUMNS = (
    "remedy",
    "activation",
    "depth",
    "width",
    "init",
    "optimizer",
    "dataset",
    "max_epochs",
    "seed",
)


def select_learning_rates(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep one learning rate per setting: the one with the highest final validation accuracy.

    A grid with an ``lr`` axis trains every setting (remedy, activation, depth, seed, ...)
    at several learning rates. The tables compare remedies at their best rate. The choice
    reads the validation split, so the test split plays no part in it. A diverged run counts
    as the worst. Settings trained at one rate pass through.

    Returns:
        The kept runs and a note naming the rates compared, when any setting had several.
    """
    if runs.empty or "lr" not in runs:
        return runs, []
    # NOTE: only the recorded settings separate runs, so two runs of one preset that differ in
    # another flag (norm_target, say) count as one setting here.
    keys = [key for key in SETTING_COLUMNS if key in runs]
    score = runs["val/acc"] if "val/acc" in runs else pd.Series(math.nan, index=runs.index)
    score = pd.to_numeric(score, errors="coerce").where(runs["status"] != STATUS_DIVERGED)
    frame = runs.assign(_lr_score=score.fillna(-math.inf))
    counts = frame.groupby(keys, dropna=False)["lr"].transform("nunique")
    if not (counts > 1).any():
        return runs, []
    order = frame.sort_values(["_lr_score", "lr"], ascending=[False, True], kind="stable")
    best = order.drop_duplicates(subset=keys, keep="first").sort_index()
    rates = ", ".join(f"{rate:g}" for rate in sorted(frame.loc[counts > 1, "lr"].unique()))
    settings = ", ".join(key.removeprefix("max_") for key in SETTING_COLUMNS)
    note = (
        f"{int((counts > 1).sum())} runs differ only in learning rate ({rates}) among the "
        f"recorded settings ({settings}); each table keeps, per setting and seed, the rate "
        "with the highest final validation accuracy, and a diverged run counts as the worst."
    )
    return best.drop(columns="_lr_score"), [note]


def _empty_runs() -> pd.DataFrame:
    return pd.DataFrame(columns=list(RECORD_COLUMNS))


def _status_notes(runs: pd.DataFrame) -> list[str]:
    notes = []
    for status, meaning in (
        (STATUS_RUNNING, "are still running (or were stopped) and have no final metrics"),
        (STATUS_FAILED, "failed with an error (see their record.json)"),
    ):
        ids = runs.loc[runs["status"] == status, "run_id"].tolist()
        if ids:
            notes.append(f"{len(ids)} runs {meaning}; they are left out: {', '.join(ids)}.")
    diverged = int((runs["status"] == STATUS_DIVERGED).sum())
    if diverged:
        notes.append(f"{diverged} runs diverged; tables mark them and count them in n.")
    remedies = sorted(runs["remedy"].unique())
    if len(remedies) < 2:
        notes.append(
            f"Only one remedy ({', '.join(remedies)}) was run, so no remedy can be compared "
            "with another; run at least two presets from bench/configs/remedies."
        )
    elif BASELINE not in remedies:
        notes.append(f"No {BASELINE} runs: differences are relative to the runner-up remedy.")
    return notes


def order_remedies(remedies: Iterable[str]) -> list[str]:
    """Return remedy names with the baseline first and the others in alphabetical order."""
    names = sorted(set(remedies))
    return [BASELINE, *(name for name in names if name != BASELINE)] if BASELINE in names else names


def add_jacobian_columns(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Add ``jacobian/<stat>_<moment>`` columns from each record's ``jacobian`` entry.

    Returns:
        The runs with the columns added (NaN where a record has none) and a note when no
        record carries a Jacobian spectrum.
    """
    runs = runs.copy()
    values: dict[str, list[float]] = {
        f"jacobian/{key}_{moment}": [] for moment in ("init", "end") for key in JACOBIAN_KEYS
    }
    for run_dir in runs["run_dir"]:
        spectra = read_record(run_dir).get("jacobian") or {}
        for moment in ("init", "end"):
            snapshot = spectra.get(moment) or {}
            for key in JACOBIAN_KEYS:
                values[f"jacobian/{key}_{moment}"].append(snapshot.get(key, math.nan))
    for column, column_values in values.items():
        runs[column] = pd.to_numeric(pd.Series(column_values, index=runs.index, dtype=float))
    notes = []
    if runs.empty or runs[list(values)].isna().all().all():
        notes.append(
            "No record carries a Jacobian spectrum (record['jacobian']), so the Jacobian "
            "table and histograms are empty; runs with the Jacobian monitor fill them."
        )
    return runs, notes


def singular_values(run_dir: str | Path, moment: str) -> np.ndarray:
    """Return a run's recorded Jacobian singular values at ``init`` or ``end`` (may be empty)."""
    spectra = read_record(run_dir).get("jacobian") or {}
    # The monitor stores None in place of the spectrum when it only estimated the moments.
    values = (spectra.get(moment) or {}).get("singular_values") or []
    return np.asarray(values, dtype=float)


def layer_profile(run_dir: str | Path, quantity: str, moment: str) -> pd.Series:
    """Return a per-layer signal statistic (``q``, ``grad_norm``, ``saturation``) of one run."""
    snapshot = (read_record(run_dir).get("signal") or {}).get(moment) or {}
    values = snapshot.get(quantity) or {}
    return pd.Series(values, dtype=float).sort_index()


# --- statistics over seeds ---------------------------------------------------------------


def cell_statistics(
    runs: pd.DataFrame, value: str, by: tuple[str, ...] = ("depth", "activation", "remedy")
) -> pd.DataFrame:
    """Return mean and sample std of ``value`` over the runs (seeds) of each cell.

    Columns: the ``by`` keys, ``mean``, ``std`` (NaN for one value), ``n`` (finished runs
    in the cell), ``n_values`` (runs with a value, which a diverged run may lack) and
    ``n_diverged``.
    """
    columns = [*by, "mean", "std", "n", "n_values", "n_diverged"]
    if runs.empty or value not in runs:
        return pd.DataFrame(columns=columns)
    frame = runs.assign(_value=pd.to_numeric(runs[value], errors="coerce"))
    frame["_diverged"] = frame["status"] == STATUS_DIVERGED
    groups = frame.groupby(list(by), dropna=False)
    stats = groups["_value"].agg(mean="mean", std="std", n_values="count")
    stats["n"] = groups.size()
    stats["n_diverged"] = groups["_diverged"].sum().astype(int)
    stats = stats.reset_index()
    # A cell whose runs all diverged has no value but stays, so the tables can mark it.
    reportable = (stats["n_values"] > 0) | (stats["n_diverged"] > 0)
    return stats[reportable][columns].reset_index(drop=True)


def _best_key(best: Best):
    if best == "max":
        return lambda mean: -mean if not math.isnan(mean) else math.inf
    if best == "min":
        return lambda mean: mean if not math.isnan(mean) else math.inf
    if best == "one":
        return lambda mean: abs(math.log(mean)) if mean > 0 else math.inf
    raise ValueError(f"best must be 'max', 'min' or 'one', got {best!r}")


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.3f}"


def _cell_text(cell: pd.Series, style: Style, bold: bool, digits: int) -> str:
    plus_minus = {"markdown": "±", "latex": r"$\pm$", "html": "&plusmn;"}[style]
    if math.isnan(cell["mean"]):
        return f"no value [n={int(cell['n'])}, {int(cell['n_diverged'])} diverged]"
    text = _number(cell["mean"], digits)
    if not math.isnan(cell["std"]):
        text += f" {plus_minus} {_number(cell['std'], digits)}"
    if bold:
        text = {
            "markdown": f"**{text}**",
            "latex": rf"\textbf{{{text}}}",
            "html": f"<b>{text}</b>",
        }[style]
    count = f"n={int(cell['n'])}"
    if cell["n_diverged"]:
        count += f", {int(cell['n_diverged'])} diverged"
    return f"{text} [{count}]"


def format_table(
    stats: pd.DataFrame,
    *,
    rows: str = "activation",
    columns: str = "remedy",
    best: Best = "max",
    style: Style = "markdown",
    digits: int = 3,
) -> pd.DataFrame:
    """Lay ``cell_statistics`` out as text cells, rows x columns, the best cell per row in bold.

    Args:
        stats: one row per cell as returned by ``cell_statistics`` (a single depth).
        best: "max" or "min" picks the largest or smallest mean. "one" picks the mean
            closest to 1 on a log scale, for ratios where 1 is ideal.
        style: markup for bold and the plus-minus sign.
    """
    key = _best_key(best)
    order = order_remedies(stats[columns]) if columns == "remedy" else sorted(stats[columns])
    table = pd.DataFrame("–", index=sorted(stats[rows].unique()), columns=order)
    table.index.name, table.columns.name = rows, columns
    for row_name, group in stats.groupby(rows):
        winner = min(group.index, key=lambda i: key(group.at[i, "mean"]))
        for index, cell in group.iterrows():
            bold = index == winner and len(group) > 1 and math.isfinite(key(cell["mean"]))
            table.at[row_name, cell[columns]] = _cell_text(cell, style, bold, digits)
    return table


# --- writing tables and figures ----------------------------------------------------------


def _latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char if char != "\\" else r"\textbackslash{}")
    return text


def publish_table(
    stats: pd.DataFrame,
    name: str,
    output_dir: str | Path,
    *,
    caption: str,
    best: Best = "max",
    rows: str = "activation",
    columns: str = "remedy",
) -> str:
    """Write one table as ``tables/<name>.csv``, ``.md`` and ``.tex``; return it as HTML.

    The CSV contains the numbers (``cell_statistics`` columns). Markdown and LaTeX contain the
    formatted cells with the best per row in bold. An empty ``stats`` writes nothing and
    returns a note.
    """
    if stats.empty:
        return notes_html([f"{caption}: no finished run has this value, so there is no table."])
    folder = Path(output_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    legend = "Mean ± std over seeds; [n=runs behind the cell, k diverged]; best per row in bold."
    layout = {"rows": rows, "columns": columns, "best": best}

    stats.to_csv(folder / f"{name}.csv", index=False)
    markdown = format_table(stats, style="markdown", **layout).to_markdown()
    (folder / f"{name}.md").write_text(f"{caption}\n\n{markdown}\n\n{legend}\n")
    latex = format_table(stats, style="latex", **layout).style
    latex = latex.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    (folder / f"{name}.tex").write_text(
        latex.to_latex(
            hrules=True,
            caption=_latex_escape(f"{caption}. {legend}").replace("±", r"$\pm$"),
            label=f"tab:{name}",
        )
    )
    cells = format_table(stats, style="html", **layout).to_html(escape=False)
    return f"<h4>{html.escape(caption)}</h4>\n{cells}\n<p><small>{html.escape(legend)}</small></p>"


def publish_tables_by_depth(
    runs: pd.DataFrame,
    value: str,
    name: str,
    output_dir: str | Path,
    *,
    caption: str,
    best: Best = "max",
) -> str:
    """Publish one table of ``value`` per depth (nonlinearity x remedy); return their HTML."""
    stats = cell_statistics(runs, value)
    if stats["n_values"].sum() == 0:
        return notes_html([f"{caption}: no finished run has {value}, so there is no table."])
    parts = []
    for depth, group in stats.groupby("depth"):
        parts.append(
            publish_table(
                group.drop(columns="depth"),
                f"{name}_depth{int(depth)}",
                output_dir,
                caption=f"{caption}, depth {int(depth)}",
                best=best,
            )
        )
    return "\n".join(parts)


def save_figure(figure: Any, name: str, output_dir: str | Path) -> list[Path]:
    """Save a matplotlib figure as ``figures/<name>.png`` and ``.svg``; return the paths."""
    folder = Path(output_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    return paths


def notes_html(notes: Iterable[str], css_class: str = "notes") -> str:
    """Return notes as an HTML list for display in a notebook or the index page."""
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return f'<div class="{css_class}"><ul>{items}</ul></div>' if items else ""


# --- outcomes: trained depth, summary ----------------------------------------------------


def deepest_trained(
    runs: pd.DataFrame, threshold: float = TRAINED_ACCURACY, by: tuple[str, ...] = ("activation",)
) -> pd.DataFrame:
    """Return, per ``by`` group, the deepest depth whose mean test accuracy reaches ``threshold``.

    A (group, remedy, depth) cell counts as trained when its mean test accuracy over seeds
    is at least ``threshold``. Diverged runs have no accuracy, so they count against no cell.
    Columns: the ``by`` keys, ``deepest_trained`` (NaN when no depth trained) and
    ``deepest_run``.
    """
    stats = cell_statistics(runs, "test/acc", by=(*by, "remedy", "depth"))
    if stats.empty:
        return pd.DataFrame(columns=[*by, "deepest_trained", "deepest_run"])
    trained = stats[stats["mean"] >= threshold].groupby(list(by))["depth"].max()
    deepest = runs.groupby(list(by))["depth"].max()
    frame = pd.DataFrame({"deepest_trained": trained, "deepest_run": deepest})
    return frame.reset_index()


def summarise(runs: pd.DataFrame, metric: str = "test/acc") -> list[str]:
    """Return one sentence per nonlinearity: the best remedy and its margin.

    Each sentence compares remedies at the deepest depth that more than one remedy reached,
    by mean ``metric`` over seeds. The margin is over the baseline, or over the runner-up
    when the baseline is best or missing.
    """
    stats = cell_statistics(runs, metric)
    lines = []
    for activation, group in stats.groupby("activation"):
        depths = group.groupby("depth")["remedy"].nunique()
        depth = depths[depths > 1].index.max() if (depths > 1).any() else depths.index.max()
        means = group[group["depth"] == depth].set_index("remedy")["mean"].dropna()
        if means.empty:
            lines.append(f"{activation} at depth {int(depth)}: every run diverged.")
            continue
        means = means.sort_values(ascending=False)
        best, score = means.index[0], means.iloc[0]
        where = f"{activation} at depth {int(depth)}"
        if len(means) == 1:
            lines.append(f"{where}: only {best} was run ({metric} {score:.3f}).")
            continue
        other = BASELINE if best != BASELINE and BASELINE in means else means.index[1]
        lines.append(
            f"{where}: {best} did best with {metric} {score:.3f}, "
            f"{score - means[other]:+.3f} over {other} ({means[other]:.3f})."
        )
    return lines


@dataclass(frozen=True)
class NotebookResult:
    """One executed notebook: its rendered page, or the error that stopped it."""

    name: str
    html: Path | None
    error: str | None = None


# --- theory beside practice --------------------------------------------------------------


def with_variances(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``sigma_w2`` and ``sigma_b2`` of each run's initialisation (NaN where unknown).

    A record's own ``sigma_w2`` / ``sigma_b2`` parameters win; otherwise the baseline init
    name gives sigma_w2 through ``INIT_SIGMA_W2`` and biases start at zero.
    """
    frame = runs.copy()
    mapped = frame["init"].map(INIT_SIGMA_W2)
    explicit_w = pd.to_numeric(frame.get("sigma_w2", pd.Series(index=frame.index)), errors="coerce")
    explicit_b = pd.to_numeric(frame.get("sigma_b2", pd.Series(index=frame.index)), errors="coerce")
    frame["sigma_w2"] = explicit_w.fillna(mapped).astype(float)
    frame["sigma_b2"] = explicit_b.fillna(0.0).astype(float)
    return frame


def _phi_functions(activation: str):
    from models.activations import resolve
    from models.theory import from_torch

    nonlinearity = resolve(activation)
    return from_torch(nonlinearity.phi, nonlinearity.name)


def theory_table(
    runs: pd.DataFrame, threshold: float = TRAINED_ACCURACY
) -> tuple[pd.DataFrame, list[str]]:
    """Return the mean-field predictions beside the deepest depth that trained.

    One row per (nonlinearity, sigma_w2, sigma_b2) among the runs: q_star, chi_1, xi_c and the
    critical sigma_w2 at that sigma_b2 from ``models.theory.analyse``, the predicted trainable
    depth 6 xi_c (Schoenholz et al. 2017, arXiv:1611.01232), and the deepest depth whose mean
    test accuracy over seeds reached ``threshold`` with any remedy at that initialisation.
    """
    from models.theory import analyse

    frame = with_variances(runs)
    notes = []
    unknown = sorted(frame.loc[frame["sigma_w2"].isna(), "init"].astype(str).unique())
    if unknown:
        notes.append(f"No sigma_w2 known for init {', '.join(unknown)}; those runs are left out.")
    frame = frame.dropna(subset=["sigma_w2"])
    outcomes = deepest_trained(frame, threshold, by=("activation", "sigma_w2", "sigma_b2"))
    rows = []
    for outcome in outcomes.itertuples(index=False):
        row = {
            "activation": outcome.activation,
            "sigma_w2": outcome.sigma_w2,
            "sigma_b2": outcome.sigma_b2,
        }
        try:
            result = analyse(_phi_functions(outcome.activation), outcome.sigma_w2, outcome.sigma_b2)
        except ValueError as error:
            notes.append(f"No theory for {outcome.activation}: {error}")
        else:
            row |= {
                "q_star": result.q_star,
                "chi_1": result.chi_1,
                "xi_c": result.xi_c,
                "critical_sigma_w2": result.sigma_w2_critical,
                "predicted_depth": result.trainable_depth,
            }
        remedies = frame.loc[
            (frame["activation"] == outcome.activation) & (frame["sigma_w2"] == outcome.sigma_w2),
            "remedy",
        ]
        rows.append(row | {"remedies": ", ".join(order_remedies(remedies))})
        rows[-1] |= {"deepest_trained": outcome.deepest_trained, "deepest_run": outcome.deepest_run}
    if "rbf" in set(frame["activation"]):
        notes.append(
            "rbf rows treat the Gaussian as an elementwise unit; models.theory.rbf analyses the "
            "distance layer itself."
        )
    columns = [
        "activation", "sigma_w2", "sigma_b2", "q_star", "chi_1", "xi_c", "critical_sigma_w2",
        "predicted_depth", "deepest_trained", "deepest_run", "remedies",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns), notes


def publish_frame(frame: pd.DataFrame, name: str, output_dir: str | Path, *, caption: str) -> str:
    """Write a plain table of numbers as CSV, Markdown and LaTeX; return it as HTML."""
    if frame.empty:
        return notes_html([f"{caption}: no rows, so there is no table."])
    folder = Path(output_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{name}.csv", index=False)
    formatted = frame.map(lambda value: _number(value, 3) if isinstance(value, float) else value)
    formatted = formatted.fillna("–").replace("nan", "–")
    (folder / f"{name}.md").write_text(f"{caption}\n\n{formatted.to_markdown(index=False)}\n")
    styler = formatted.style.hide(axis="index").format(escape="latex")
    styler = styler.format_index(escape="latex", axis=1)
    (folder / f"{name}.tex").write_text(
        styler.to_latex(hrules=True, caption=_latex_escape(caption), label=f"tab:{name}")
    )
    return f"<h4>{html.escape(caption)}</h4>\n{formatted.to_html(index=False)}"


# --- figures -----------------------------------------------------------------------------


def _deepest(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["depth"] == runs["depth"].max()]


def plot_accuracy_vs_depth(runs: pd.DataFrame, threshold: float = TRAINED_ACCURACY):
    """Plot test accuracy against depth, one panel per nonlinearity and one line per remedy.

    Returns None when no run has a test accuracy.
    """
    import seaborn as sns

    data = runs.assign(test_accuracy=pd.to_numeric(runs["test/acc"], errors="coerce"))
    data = data.dropna(subset=["test_accuracy"])
    if data.empty:
        return None
    panels = data["activation"].nunique()
    grid = sns.relplot(
        data=data,
        x="depth",
        y="test_accuracy",
        hue="remedy",
        hue_order=order_remedies(data["remedy"]),
        col="activation",
        col_wrap=min(panels, 4),
        kind="line",
        marker="o",
        errorbar="sd",
        height=3,
    )
    grid.refline(y=threshold, color="grey", linestyle=":")
    grid.set_axis_labels("depth (weight layers)", "test accuracy")
    grid.figure.suptitle(f"Test accuracy (mean ± std over seeds; dotted: {threshold:g})", y=1.03)
    return grid.figure


def _grad_norm_matrix(run_dir: str) -> pd.DataFrame:
    series = read_series(run_dir)
    series = series[series["quantity"] == "grad_norm"]
    if series.empty:
        return pd.DataFrame()
    matrix = series.pivot_table(index="layer", columns="step", values="value")
    return np.log10(matrix.where(matrix > 0))


def plot_gradient_heatmaps(runs: pd.DataFrame, activation: str):
    """Plot log10 gradient norms (layer x training step) of one run per remedy, side by side.

    Uses the deepest depth of ``activation`` and the lowest seed of each remedy there; returns
    None when no such run wrote a gradient series.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    subset = _deepest(runs[runs["activation"] == activation])
    panels = {}
    for remedy in order_remedies(subset["remedy"]):
        run = subset[subset["remedy"] == remedy].sort_values("seed").iloc[0]
        matrix = _grad_norm_matrix(run["run_dir"])
        if not matrix.empty:
            panels[remedy] = matrix
    if not panels:
        return None
    values = np.concatenate([matrix.to_numpy().ravel() for matrix in panels.values()])
    limits = {"vmin": np.nanmin(values), "vmax": np.nanmax(values)}
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(4.5 * len(panels), 3.4),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for index, (ax, (remedy, matrix)) in enumerate(zip(axes[0], panels.items(), strict=True)):
        last = index == len(panels) - 1
        sns.heatmap(
            matrix,
            ax=ax,
            cmap="viridis",
            cbar=last,
            cbar_kws={"label": "log10 grad norm"},
            **limits,
        )
        ax.set_title(remedy)
        ax.set_xlabel("training step")
        ax.set_ylabel("layer" if index == 0 else "")
    depth = int(subset["depth"].iloc[0])
    figure.suptitle(f"{activation}, depth {depth}: gradient norm per layer during training")
    return figure


def plot_signal_propagation(runs: pd.DataFrame):
    """Plot q_l (mean squared pre-activation) against layer at init (solid) and end (dashed).

    One panel per nonlinearity at its deepest depth, one colour per remedy, averaged over
    seeds; returns None when no record has per-layer q.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    activations = sorted(runs["activation"].unique())
    if not activations:
        return None
    remedies = order_remedies(runs["remedy"])
    colours = dict(zip(remedies, sns.color_palette(n_colors=len(remedies)), strict=True))
    figure, axes = plt.subplots(
        1, len(activations), figsize=(4 * len(activations), 3.2), squeeze=False
    )
    drawn = False
    for ax, activation in zip(axes[0], activations, strict=True):
        subset = _deepest(runs[runs["activation"] == activation])
        for remedy, group in subset.groupby("remedy"):
            for moment, style in (("init", "-"), ("end", "--")):
                profiles = [layer_profile(d, "q", moment) for d in group["run_dir"]]
                profile = pd.concat(profiles, axis=1).mean(axis=1) if profiles else pd.Series()
                if profile.empty:
                    continue
                layers = np.arange(1, len(profile) + 1)
                label = f"{remedy} ({moment})"
                ax.plot(layers, profile.to_numpy(), style, color=colours[remedy], label=label)
                drawn = True
        ax.set_yscale("log")
        ax.set_title(f"{activation}, depth {int(subset['depth'].iloc[0])}")
        ax.set_xlabel("hidden layer l")
        ax.set_ylabel("q_l")
    if not drawn:
        plt.close(figure)
        return None
    axes[0][-1].legend(fontsize="small", loc="best")
    return figure


def plot_jacobian_histograms(runs: pd.DataFrame):
    """Plot histograms of the input-to-last-hidden Jacobian's singular values at init and end.

    One panel per (nonlinearity, remedy) at the deepest depth, pooling seeds; returns None
    when no record carries singular values. The x axis is log10 of the singular value,
    because vanishing and exploding networks spread their spectra over many orders of
    magnitude. Values that are not finite and positive (the spectrum of a run whose forward
    pass overflowed, or directions that rounding zeroed) are left out, and the panel title
    names the moments that had them.
    """
    import matplotlib.pyplot as plt

    cells = []
    for (activation, remedy), group in _deepest_groups(runs):
        spectra = {}
        left_out = []
        for moment in ("init", "end"):
            values = np.concatenate([singular_values(d, moment) for d in group["run_dir"]])
            positive = values[np.isfinite(values) & (values > 0)]
            if len(positive) < len(values):
                left_out.append(moment)
            spectra[moment] = np.log10(positive)
        title = f"{activation} / {remedy}"
        if left_out:
            title += f"\nzero or not finite at {', '.join(left_out)}"
        if any(len(values) for values in spectra.values()) or left_out:
            cells.append((title, spectra))
    if not cells:
        return None
    columns = min(len(cells), 4)
    rows = math.ceil(len(cells) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.5 * columns, 2.8 * rows), squeeze=False)
    for ax, (title, spectra) in zip(axes.ravel(), cells, strict=False):
        for moment, colour in (("init", "tab:blue"), ("end", "tab:orange")):
            if len(spectra[moment]):
                ax.hist(spectra[moment], bins=30, alpha=0.6, color=colour, label=moment)
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("log10 singular value")
    for ax in axes.ravel()[len(cells) :]:
        ax.axis("off")
    axes[0][0].legend()
    figure.suptitle("Singular values of the Jacobian from the input to the last hidden layer")
    figure.tight_layout()
    return figure


def _deepest_groups(runs: pd.DataFrame):
    for activation in sorted(runs["activation"].unique()):
        subset = _deepest(runs[runs["activation"] == activation])
        for remedy in order_remedies(subset["remedy"]):
            yield (activation, remedy), subset[subset["remedy"] == remedy]


def plot_phase_diagram(runs: pd.DataFrame, activation: str, threshold: float = TRAINED_ACCURACY):
    """Plot the theory's phase diagram of one nonlinearity with the measured outcomes on top.

    Left: xi_c over the (sigma_w2, sigma_b2) plane with the critical line chi_1 = 1 and the
    runs' initialisations (filled: some depth trained). Right: the predicted trainable depth
    6 xi_c against sigma_w2 at the runs' sigma_b2, with each (sigma_w2, depth) cell marked
    trained (o) or not (x) and coloured by mean test accuracy. Returns None when the runs
    have no known sigma_w2.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from models.theory import phase_diagram

    frame = with_variances(runs[runs["activation"] == activation]).dropna(subset=["sigma_w2"])
    if frame.empty:
        return None
    phi = _phi_functions(activation)
    sigma_b2 = float(frame["sigma_b2"].mode().iloc[0])
    weights = np.linspace(0.05, max(4.0, 1.5 * frame["sigma_w2"].max()), 40)
    biases = np.linspace(0.0, max(0.5, 1.5 * frame["sigma_b2"].max()), 12)
    plane = phase_diagram(phi, weights, biases)
    line = phase_diagram(phi, weights, [sigma_b2])
    cells = cell_statistics(frame, "test/acc", by=("sigma_w2", "sigma_b2", "depth"))

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    xi_c = np.clip(plane.xi_c, 1e-1, 1e3)
    mesh = left.pcolormesh(weights, biases, xi_c, norm=LogNorm(1e-1, 1e3), shading="nearest")
    figure.colorbar(mesh, ax=left, label="xi_c (layers)")
    if np.nanmin(plane.chi_1) < 1.0 < np.nanmax(plane.chi_1):
        left.contour(weights, biases, plane.chi_1, levels=[1.0], colors="white", linestyles="--")
    trained = cells[cells["mean"] >= threshold]
    left.scatter(cells["sigma_w2"], cells["sigma_b2"], facecolors="none", edgecolors="red", s=60)
    left.scatter(trained["sigma_w2"], trained["sigma_b2"], color="red", s=60)
    left.set(xlabel="sigma_w2", ylabel="sigma_b2", title=f"{activation}: xi_c, chi_1 = 1 dashed")

    right.plot(weights, np.clip(6.0 * line.xi_c[0], 0, 1e4), "k-", label="6 xi_c (theory)")
    for marker, subset in (("o", trained), ("x", cells[cells["mean"] < threshold])):
        points = right.scatter(
            subset["sigma_w2"], subset["depth"], c=subset["mean"], vmin=0, vmax=1, marker=marker
        )
    figure.colorbar(points, ax=right, label="test accuracy")
    right.set_yscale("log")
    right.set_ylim(1, max(1000.0, 2.0 * frame["depth"].max()))
    right.set(xlabel="sigma_w2", ylabel="depth", title=f"sigma_b2 = {sigma_b2:g}: o trained, x not")
    right.legend(loc="upper left")
    return figure


# --- the command -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Execute the report notebooks against a results folder and render HTML "
        "pages, LaTeX/Markdown/CSV tables and PNG/SVG figures.",
    )
    parser.add_argument("--results", default="runs", help="results folder (default: runs)")
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--notebooks",
        default=str(NOTEBOOK_DIR),
        help="folder of jupytext percent notebooks (*.py) to execute (default: reports/)",
    )
    parser.add_argument(
        "--trained-accuracy",
        type=float,
        default=TRAINED_ACCURACY,
        help="mean test accuracy at which a configuration counts as trained "
        f"(default: {TRAINED_ACCURACY})",
    )
    parser.add_argument(
        "--show-code", action="store_true", help="include the notebooks' code in the HTML pages"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="notebooks executed at the same time (default: min(4, CPU count))",
    )
    parser.add_argument(
        "--timeout", type=int, default=600, help="seconds one notebook cell may run (default: 600)"
    )
    return parser


def _check_arguments(arguments: argparse.Namespace) -> list[Path]:
    results = Path(arguments.results)
    if not results.is_dir():
        raise ValueError(
            f"--results {results}: folder not found; pass the folder that contains the run "
            "directories (python -m bench fit --results DIR writes one)"
        )
    if not 0.0 <= arguments.trained_accuracy <= 1.0:
        raise ValueError(
            f"--trained-accuracy must lie in [0, 1], got {arguments.trained_accuracy}: "
            "pass a test accuracy such as 0.25"
        )
    if arguments.jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {arguments.jobs}")
    if arguments.timeout <= 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {arguments.timeout}")
    notebooks = sorted(Path(arguments.notebooks).glob("*.py"))
    if not notebooks:
        raise ValueError(
            f"--notebooks {arguments.notebooks}: no jupytext notebooks (*.py) found; pass the "
            "folder that contains them (reports/ in the repository)"
        )
    return notebooks


def execute_notebook(
    source: Path, results_dir: Path, output_dir: Path, arguments: argparse.Namespace
) -> NotebookResult:
    """Execute one jupytext notebook with papermill and render it to HTML.

    A notebook that raises is still rendered, with the error where it stopped.
    """
    import jupytext
    import papermill

    executed = output_dir / "notebooks" / f"{source.stem}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    parameters = {
        "results_dir": str(results_dir.resolve()),
        "output_dir": str(output_dir.resolve()),
        "trained_accuracy": arguments.trained_accuracy,
    }
    error = None
    try:
        papermill.execute_notebook(
            jupytext.read(source),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            language="python",
            progress_bar=False,
            cwd=str(output_dir),
            execution_timeout=arguments.timeout,
        )
    except papermill.PapermillExecutionError as failure:
        error = f"{failure.ename}: {failure.evalue}"
    page = output_dir / f"{source.stem}.html"
    page.write_text(render_html(executed, show_code=arguments.show_code))
    return NotebookResult(source.stem, page, error)


def render_html(notebook: Path, show_code: bool = False) -> str:
    """Render an executed notebook to one self-contained HTML page.

    Figures are embedded as base64 images. nbconvert's full templates load MathJax,
    require.js and mermaid from a CDN, so the page wraps the script-free ``basic`` template in
    a plain head of its own and loads nothing from the network.
    """
    from nbconvert import HTMLExporter

    # nbconvert looks for its templates under the running environment's prefix. A virtual
    # environment created with --system-site-packages uses nbconvert from the base
    # installation, whose templates lie under the base prefix. The working directory stays
    # first, as in nbconvert's own default for extra_template_basedirs.
    base_templates = os.path.join(sys.base_prefix, "share", "jupyter", "nbconvert", "templates")
    exporter = HTMLExporter(
        template_name="basic",
        extra_template_basedirs=[os.getcwd(), base_templates],
        extra_template_paths=[base_templates],
        exclude_input=not show_code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    body, _ = exporter.from_filename(str(notebook))
    return _page(notebook.stem, body)


_STYLE = (
    "body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:0.5em 0}"
    "th,td{border-bottom:1px solid #ccc;padding:0.2em 0.6em;text-align:right}"
    "img{max-width:100%}.notes{color:#8a4b00}pre{background:#f6f6f6;padding:0.5em}"
)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f'<body>\n<p><a href="index.html">report index</a></p>\n{body}\n</body></html>\n'
    )


def write_index(
    output_dir: Path,
    results_dir: Path,
    runs: pd.DataFrame,
    notes: list[str],
    pages: list[NotebookResult],
) -> Path:
    """Write ``index.html`` and ``summary.md``: run counts, notes, summary and page links."""
    summary = summarise(runs) if not runs.empty else []
    links = []
    for page in pages:
        status = f" — failed: {html.escape(page.error)}" if page.error else ""
        links.append(f'<li><a href="{page.html.name}">{html.escape(page.name)}</a>{status}</li>')
    artefacts = sorted(
        path.relative_to(output_dir).as_posix()
        for folder in ("tables", "figures")
        for path in (output_dir / folder).glob("*")
    )
    files = "".join(f'<li><a href="{name}">{html.escape(name)}</a></li>' for name in artefacts)
    count = f"{len(runs)} finished runs in {html.escape(str(results_dir.resolve()))}"
    sections = [
        "<h1>saturating-bench report</h1>",
        f"<p>{count}.</p>",
        "<h2>What is missing</h2>" + notes_html(notes) if notes else "",
        "<h2>Summary</h2>",
        notes_html(summary, "summary") or "<p>No finished run to summarise.</p>",
        "<h2>Pages</h2>",
        f"<ul>{''.join(links)}</ul>",
        "<h2>Tables and figures</h2>",
        f"<ul>{files}</ul>" if files else "<p>No tables or figures were written.</p>",
    ]
    body = _page("saturating-bench report", "\n".join(sections))
    index = output_dir / "index.html"
    index.write_text(body)
    lines = ["# saturating-bench report", "", f"{len(runs)} finished runs.", ""]
    lines += [f"- {line}" for line in [*notes, *summary]]
    (output_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return index


def _clear_outputs(output_dir: Path) -> None:
    """Create the output folder, removing tables and figures an earlier report left there."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for folder in ("tables", "figures", "notebooks"):
        shutil.rmtree(output_dir / folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m bench report``; return 0, 1 if a notebook failed, 2 on invalid input."""
    try:
        arguments = _parser().parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    try:
        notebooks = _check_arguments(arguments)
        output_dir = Path(arguments.out)
        _clear_outputs(output_dir)
    except (ValueError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2

    results_dir = Path(arguments.results)
    # Each notebook runs in its own kernel process, so threads overlap their start-up and work.
    with ThreadPoolExecutor(max_workers=arguments.jobs) as pool:
        pages = list(
            pool.map(
                lambda path: execute_notebook(path, results_dir, output_dir, arguments), notebooks
            )
        )
    runs, notes = load_runs(results_dir)
    index = write_index(output_dir, results_dir, runs, notes, pages)
    failed = [page for page in pages if page.error]
    for page in failed:
        print(f"{PROG}: error: notebook {page.name} failed: {page.error}", file=sys.stderr)
    print(f"report written to {index}")
    return 1 if failed else 0
