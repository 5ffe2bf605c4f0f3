"""Gallery order: walkthrough, formulas, prediction, selection, nested/crossed, weights, pipelines,
pitfalls, GLMMs, scale."""

ORDER = [
    "plot_sleepstudy.py",
    "plot_formulas.py",
    "plot_new_groups.py",
    "plot_model_selection.py",
    "plot_nested_crossed.py",
    "plot_aggregated.py",
    "plot_pipeline.py",
    "plot_pitfalls.py",
    "plot_glmm.py",
    "plot_large_dataset.py",
    "plot_dask.py",
]


class ExampleOrder:
    """sphinx-gallery ``within_subsection_order``: the files of ``ORDER``, then the rest by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        if filename in ORDER:
            return (ORDER.index(filename), filename)
        return (len(ORDER), filename)
