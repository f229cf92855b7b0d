# %% [markdown]
# # Gradient flow and signal propagation
#
# The gradient ratio is the first-layer over the last-layer gradient norm on a fixed probe
# batch: 1 is ideal, far below 1 means vanishing gradients. In the tables the best cell per
# row is the one closest to 1 on a log scale.

# %% tags=["parameters"]
results_dir = "runs"
output_dir = "reports/_build"
trained_accuracy = 0.25

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, display

from bench import report

runs, notes = report.load_runs(results_dir)
display(HTML(report.notes_html(notes)))

# %% [markdown]
# ## Table 2: gradient ratio at initialisation and at the end of training

# %%
for moment, words in (("init", "at initialisation"), ("end", "at the end of training")):
    tables = report.publish_tables_by_depth(
        runs,
        f"signal/grad_ratio_{moment}",
        f"grad_ratio_{moment}",
        output_dir,
        caption=f"Gradient ratio (first / last layer) {words}",
        best="one",
    )
    display(HTML(tables))

# %% [markdown]
# ## Gradient norm per layer during training
#
# One run per remedy (the lowest seed) at the deepest depth, on a shared colour scale.

# %%
for activation in sorted(runs["activation"].unique()):
    figure = report.plot_gradient_heatmaps(runs, activation)
    if figure is None:
        display(HTML(report.notes_html([f"{activation}: no run wrote a gradient series."])))
        continue
    report.save_figure(figure, f"grad_norm_heatmap_{activation}", output_dir)
    plt.show()

# %% [markdown]
# ## Signal propagation: q_l against layer

# %%
figure = report.plot_signal_propagation(runs)
if figure is None:
    display(HTML(report.notes_html(["No record has per-layer pre-activation lengths q_l."])))
else:
    report.save_figure(figure, "signal_propagation", output_dir)
    plt.show()
