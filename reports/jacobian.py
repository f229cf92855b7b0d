# %% [markdown]
# # Jacobian spectrum
#
# Singular values of the Jacobian from the input to the last hidden layer (the readout is
# left out, since its 10 outputs cap the rank) on a fixed probe batch. Dynamical isometry
# means a mean near 1 (best: closest to 1 on a log scale) and a small spread (best: smallest).

# %% tags=["parameters"]
results_dir = "runs"
output_dir = "reports/_build"
trained_accuracy = 0.25

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, display

from bench import report

runs, notes = report.load_runs(results_dir)
runs, jacobian_notes = report.add_jacobian_columns(runs)
display(HTML(report.notes_html(notes + jacobian_notes)))

# %% [markdown]
# ## Table 3: singular-value mean and spread, at initialisation and at the end

# %%
for moment, words in (("init", "at initialisation"), ("end", "at the end of training")):
    for stat, best, label in (("sv_mean", "one", "mean"), ("sv_std", "min", "spread (std)")):
        tables = report.publish_tables_by_depth(
            runs,
            f"jacobian/{stat}_{moment}",
            f"jacobian_{stat}_{moment}",
            output_dir,
            caption=f"Jacobian singular-value {label} {words}",
            best=best,
        )
        display(HTML(tables))

# %% [markdown]
# ## Singular-value histograms

# %%
figure = report.plot_jacobian_histograms(runs)
if figure is None:
    display(HTML(report.notes_html(["No record carries Jacobian singular values to plot."])))
else:
    report.save_figure(figure, "jacobian_histograms", output_dir)
    plt.show()
