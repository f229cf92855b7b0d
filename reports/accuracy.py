# %% [markdown]
# # Test accuracy: nonlinearity x remedy
#
# Mean test accuracy over seeds for every nonlinearity (rows) and remedy (columns), one table
# per depth, and accuracy against depth. Diverged runs have no test accuracy; the cells count
# them.

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
# ## Table 1: test accuracy

# %%
display(
    HTML(
        report.publish_tables_by_depth(
            runs, "test/acc", "accuracy", output_dir, caption="Test accuracy", best="max"
        )
    )
)

# %% [markdown]
# ## Accuracy against depth

# %%
figure = report.plot_accuracy_vs_depth(runs, trained_accuracy)
if figure is None:
    display(HTML(report.notes_html(["No finished run has a test accuracy to plot."])))
else:
    report.save_figure(figure, "accuracy_vs_depth", output_dir)
    plt.show()
