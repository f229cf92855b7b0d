# %% [markdown]
# # Theory beside practice
#
# Mean-field predictions (Schoenholz et al. 2017, arXiv:1611.01232) at each initialisation
# the runs used: the fixed point q*, chi_1 (the per-layer factor of squared gradients), the
# correlation depth scale xi_c, the critical sigma_w2 at the same sigma_b2, and the predicted
# trainable depth 6 xi_c. Beside them, the deepest depth that trained: mean test accuracy over
# seeds at least `trained_accuracy`, with any remedy that starts from that initialisation.

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
# ## Table 4: predicted and measured trainable depth

# %%
table, theory_notes = report.theory_table(runs, trained_accuracy)
display(HTML(report.notes_html(theory_notes)))
caption = f"Theory beside practice (trained: mean test accuracy >= {trained_accuracy:g})"
display(HTML(report.publish_frame(table, "theory", output_dir, caption=caption)))

# %% [markdown]
# ## Phase diagrams with measured trainability

# %%
for activation in sorted(runs["activation"].unique()):
    figure = report.plot_phase_diagram(runs, activation, trained_accuracy)
    if figure is None:
        display(HTML(report.notes_html([f"{activation}: no run with a known sigma_w2."])))
        continue
    report.save_figure(figure, f"phase_diagram_{activation}", output_dir)
    plt.show()
