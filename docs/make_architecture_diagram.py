"""Draw the layers of sklmm into ``docs/_static/architecture.png`` (matplotlib only).

Run from anywhere after changing the architecture, and commit the PNG::

    python3 docs/make_architecture_diagram.py

The picture is the flow of ``fit`` (solid arrows) and of ``predict`` (dashed arrows)
through the layers, top to bottom; docs/architecture.rst describes each module.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Rectangle

OUT = Path(__file__).resolve().parent / "_static" / "architecture.png"

# Drawing units: x in 0..100, y in 0..118 (top). Layer labels in x < 17, the boxes in
# 18..88, the rail on the right (x > 89) carries the arrows that go back up or skip layers.
WIDTH, HEIGHT = 100, 118
FIT = "#1f3b73"  # fit flow
PREDICT = "#d9480f"  # predict flow
USES = "#868e96"  # "uses" links

LAYERS = [
    # (title, subtitle, y bottom, y top, band colour, edge colour)
    ("User API", "sklmm/__init__.py", 102, 116, "#e7f0fb", "#4a78b5"),
    ("Input", "validation, terms,\nformula", 83, 99, "#e9f6ec", "#4c9a5f"),
    ("Model +\nstatistics", "in memory and Dask\n→ one MixedModel", 56, 80, "#fff4e0", "#c98a1b"),
    ("Criteria", "D(theta) = -2 log L,\nprofiled", 40, 53, "#f6e9f5", "#a0509a"),
    ("Optimizer", "all solver policy", 24, 37, "#fdecea", "#c0453b"),
    ("Results", "user scale", 3, 21, "#eef0f2", "#5f6b77"),
]


def band(ax, title, subtitle, y0, y1, face, edge):
    ax.add_patch(Rectangle((1, y0), 87.5, y1 - y0, facecolor=face, edgecolor="none", zorder=0))
    ax.add_patch(Rectangle((1, y0), 1.0, y1 - y0, facecolor=edge, edgecolor="none", zorder=1))
    ym = (y0 + y1) / 2
    ax.text(
        3.2,
        ym + 1.2,
        title,
        ha="left",
        va="bottom",
        fontsize=11.5,
        weight="bold",
        color=edge,
        linespacing=1.1,
    )
    ax.text(
        3.2,
        ym - 0.6,
        subtitle,
        ha="left",
        va="top",
        fontsize=8.2,
        color="#495057",
        linespacing=1.15,
    )


def box(ax, x, y, w, h, title, body="", edge="#343a40", face="white", size=9.0):
    """A rounded box with lower-left corner (x, y); returns its anchor points."""
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=1.0",
            facecolor=face,
            edgecolor=edge,
            linewidth=1.4,
            zorder=3,
        )
    )
    # The title at the top of a box with a body, in the middle of one without.
    ax.text(
        x + w / 2,
        y + h - 1.0 if body else y + h / 2,
        title,
        ha="center",
        va="top" if body else "center",
        fontsize=size + 0.6,
        weight="bold",
        family="monospace",
        zorder=4,
    )
    if body:
        ax.text(
            x + w / 2,
            y + h - 3.6,
            body,
            ha="center",
            va="top",
            fontsize=size,
            linespacing=1.25,
            zorder=4,
        )
    return {
        "top": (x + w / 2, y + h),
        "bottom": (x + w / 2, y),
        "left": (x, y + h / 2),
        "right": (x + w, y + h / 2),
        "x": x,
        "y": y,
        "w": w,
        "h": h,
    }


def arrow(
    ax,
    start,
    end,
    color=FIT,
    style="-|>",
    ls="-",
    lw=1.6,
    rad=0.0,
    label=None,
    label_at=None,
    label_ha="left",
    shrink=2,
):
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        zorder=5,
        arrowprops={
            "arrowstyle": style,
            "color": color,
            "lw": lw,
            "linestyle": ls,
            "shrinkA": shrink,
            "shrinkB": shrink,
            "connectionstyle": f"arc3,rad={rad}",
            "mutation_scale": 13,
        },
    )
    if label:
        x, y = label_at if label_at else ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(
            x,
            y,
            label,
            ha=label_ha,
            va="center",
            fontsize=8.2,
            color=color,
            zorder=6,
            style="italic",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85},
        )


def polyline(ax, points, color, ls="-", lw=1.6):
    """Straight segments through ``points`` with an arrow head on the last one."""
    xs, ys = zip(*points[:-1], strict=True)
    ax.plot(xs, ys, color=color, lw=lw, ls=ls, zorder=5, solid_capstyle="butt")
    arrow(ax, points[-2], points[-1], color=color, ls=ls, lw=lw, shrink=0)


def draw():
    fig, ax = plt.subplots(figsize=(12.5, 14.5))
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(-4, HEIGHT + 1.5)
    ax.set_axis_off()
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=0.995)

    for layer in LAYERS:
        band(ax, *layer)
    c = {layer[0].split()[0]: layer[5] for layer in LAYERS}

    # -- user API ---------------------------------------------------------------------
    est = box(
        ax,
        19,
        104,
        24,
        10.5,
        "MixedLMRegressor",
        "_estimator.py: thin scikit-learn\nshell, fit / predict / score",
        edge=c["User"],
    )
    box(ax, 44.5, 104, 13.5, 10.5, "make_group_scorer", "_scorer.py", edge=c["User"], size=8.2)
    box(
        ax,
        59.5,
        104,
        13.5,
        10.5,
        "plot_caterpillar\nplot_residuals",
        "\n_plotting.py",
        edge=c["User"],
        size=8.2,
    )
    box(
        ax,
        74.5,
        104,
        13.5,
        10.5,
        "likelihood_\nratio_test",
        "\n_inference.py",
        edge=c["User"],
        size=8.2,
    )

    # -- input ------------------------------------------------------------------------
    val = box(
        ax,
        19,
        85,
        21,
        12,
        "_validation.py",
        "X, y and the label columns;\nshared by memory and Dask",
        edge=c["Input"],
    )
    terms = box(
        ax,
        44,
        85,
        24,
        12,
        "_terms.py",
        "RandomTerm, one type for every\nterm: resolve, encode and\nmatch levels",
        edge=c["Input"],
    )
    form = box(ax, 72, 85, 16, 12, "_formula.py", 'lme4 syntax\n"(1 + x | g)"', edge=c["Input"])

    # -- model + statistics -----------------------------------------------------------
    k = c["Model"]
    mem = box(ax, 19, 70, 21, 8.5, "in memory", "_model.build_model", edge=k, size=8.6)
    cross = box(
        ax,
        43,
        68.5,
        22,
        10,
        "_crossprod.py",
        "BlockedStats, SufficientStats;\nmodel_stats, sum_stats,\nrescale_terms",
        edge=k,
        size=8.2,
    )
    dask = box(
        ax,
        68,
        68.5,
        20,
        10,
        "_dask.py",
        "Dask: two passes over the\npartitions; lazy predict",
        edge=k,
        size=8.2,
    )
    model = box(
        ax,
        29,
        57.5,
        49,
        8.2,
        "MixedModel  (_model.py)",
        "terms + fixed-effects transform + BlockedStats + REML/ML;\n"
        "criterion() picks the engine below",
        edge=k,
        face="#fffaf0",
        size=8.6,
    )

    # -- criteria ---------------------------------------------------------------------
    k = c["Criteria"]
    prof = box(
        ax,
        19,
        41.5,
        31,
        9.5,
        "_profile.py",
        "ProfiledDeviance: one factor,\nanalytic Hessian and EM step",
        edge=k,
    )
    blk = box(
        ax,
        57,
        41.5,
        31,
        9.5,
        "_blocked.py",
        "BlockedDeviance: several terms,\nblocked Cholesky, analytic gradient",
        edge=k,
    )

    # -- optimizer --------------------------------------------------------------------
    k = c["Optimizer"]
    solv = box(ax, 19, 25.5, 21, 9.5, "_solvers.py", "EM, then Newton", edge=k)
    opt = box(
        ax, 44, 25.5, 24, 9.5, "_optimize.py", "resolve_solver, optimize\n→ OptSummary", edge=k
    )
    lbfgs = box(
        ax, 72, 25.5, 16, 9.5, "_blocked.py", "minimize_blocked:\nL-BFGS-B", edge=k, size=8.4
    )

    # -- results ----------------------------------------------------------------------
    k = c["Results"]
    fitted = box(
        ax,
        19,
        6,
        38,
        11.5,
        "FittedModel  (_fitted.py)",
        "user-scale results per term; one predict\nover the terms; variance "
        "intervals;\nML refit for the likelihood-ratio test",
        edge=k,
    )
    inf = box(
        ax, 63, 6, 25, 11.5, "_inference.py", "tables, summary text,\nlikelihood-ratio test", edge=k
    )

    # -- fit: solid arrows -----------------------------------------------------------------
    arrow(
        ax,
        (est["x"] + 7, est["y"]),
        (val["x"] + 7, val["y"] + val["h"]),
        label="fit",
        label_at=(27.5, 101.2),
    )
    arrow(ax, val["right"], terms["left"])
    arrow(ax, form["left"], terms["right"], label="parse", label_at=(68.4, 93.6))
    arrow(ax, (val["x"] + 7, val["y"]), mem["top"])
    arrow(
        ax,
        (terms["x"] + 14, terms["y"]),
        dask["top"],
        rad=-0.12,
        label="Dask input",
        label_at=(71.5, 81.2),
    )
    arrow(ax, mem["bottom"], (model["x"] + 6, model["y"] + model["h"]))
    arrow(ax, dask["bottom"], (model["x"] + 43, model["y"] + model["h"]))
    for side, target in (("left", mem["right"]), ("right", dask["left"])):
        arrow(ax, cross[side], target, color=USES, style="-", ls=":", lw=1.3, shrink=1)
    arrow(ax, (model["x"] + 8, model["y"]), prof["top"], label="one term", label_at=(37.3, 54.5))
    arrow(
        ax, (model["x"] + 41, model["y"]), blk["top"], label="several terms", label_at=(73.5, 54.5)
    )
    arrow(ax, prof["bottom"], (opt["x"] + 5, opt["y"] + opt["h"]))
    arrow(ax, blk["bottom"], (opt["x"] + 19, opt["y"] + opt["h"]))
    arrow(ax, opt["left"], solv["right"], style="<|-|>")
    arrow(ax, opt["right"], lbfgs["left"], style="<|-|>")
    arrow(
        ax,
        (opt["x"] + 8, opt["y"]),
        (fitted["x"] + 27, fitted["y"] + fitted["h"]),
        label="OptSummary",
        label_at=(47.5, 21.8),
        label_ha="center",
    )
    arrow(ax, fitted["right"], inf["left"])
    # The fitted model goes back up to the estimator's attributes.
    polyline(
        ax,
        [
            (fitted["x"] + 30, fitted["y"]),
            (fitted["x"] + 30, 1.0),
            (93, 1.0),
            (93, 117.6),
            (est["x"] + 12, 117.6),
            (est["x"] + 12, est["y"] + est["h"]),
        ],
        FIT,
    )
    ax.text(
        93.8,
        13,
        "fitted attributes\n(coef_, summary(), ...)",
        rotation=90,
        ha="left",
        va="bottom",
        fontsize=8.2,
        color=FIT,
        style="italic",
    )

    # -- predict: dashed arrows ---------------------------------------------------------
    arrow(
        ax,
        (est["x"] + 16, est["y"]),
        (val["x"] + 16, val["y"] + val["h"]),
        color=PREDICT,
        ls="--",
        label="predict",
        label_at=(36.2, 101.2),
    )
    polyline(
        ax,
        [
            (terms["x"] + 20, terms["y"] + terms["h"]),
            (terms["x"] + 20, 100.5),
            (90.5, 100.5),
            (90.5, 22.3),
            (54, 22.3),
            (54, fitted["y"] + fitted["h"]),
        ],
        PREDICT,
        ls="--",
    )
    ax.text(
        89.8,
        62,
        "match_terms → FittedModel.predict",
        rotation=90,
        ha="right",
        va="center",
        fontsize=8.2,
        color=PREDICT,
        style="italic",
    )

    # -- legend -------------------------------------------------------------------------
    y = -2.2
    ax.plot([19, 24], [y, y], color=FIT, lw=1.6)
    ax.text(25, y, "fit", va="center", fontsize=8.6)
    ax.plot([30, 35], [y, y], color=PREDICT, lw=1.6, ls="--")
    ax.text(
        36,
        y,
        "predict (Dask: maps FittedModel.predict over the partitions)",
        va="center",
        fontsize=8.6,
    )
    ax.plot([72, 77], [y, y], color=USES, lw=1.3, ls=":")
    ax.text(78, y, "uses", va="center", fontsize=8.6)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return OUT


if __name__ == "__main__":
    print(draw())
