"""Figures drawn from the averaged runs of a table: `report.figure` names one of `FIGURES`.

Each figure function takes a `FigureData` and returns a matplotlib Figure on the Agg canvas
(no pyplot state). Its docstring names the record fields and the files beside result.json it
reads, so the training side knows what to write. A figure whose inputs are missing raises
FigureError; the report lists it as a problem and writes the tables without the figure.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from l2rw.errors import UserError
from l2rw.registry import Registry
from l2rw.report.frame import value_label
from l2rw.report.records import Record
from l2rw.report.spec import TableSpec, value_order
from l2rw.tracking.sinks import METRICS_NAME

FIGURES = Registry("figure")
# Artifacts a run may save beside result.json for the figures below.
TOY_BOUNDARY = "toy_boundary.npz"
FEATURES = "features.npz"
CURVES = ["test/acc", "train/loss"]
TSNE_MAX_POINTS = 2000
PANELS_PER_LINE = 4


class FigureError(UserError):
    """A figure's inputs are missing from the records."""


@dataclass(frozen=True)
class Run:
    """An averaged run with the labels of its cell."""

    record: Record
    row: str
    column: str
    seed: int


@dataclass(frozen=True)
class FigureData:
    spec: TableSpec
    # Aggregated cells: key columns, row, column (labels), mean, ci95, n, flags.
    cells: pd.DataFrame
    # The averaged runs (one per cell and seed), in table order then seed.
    runs: list[Run]


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


@FIGURES.register("error_vs_setting")
def error_vs_setting(data: FigureData) -> Figure:
    """The reported value vs the column setting, one line per row, 95% CI error bars.

    L2RW Fig. 2 (error vs majority proportion), Fig. 4 (accuracy vs number of clean images),
    Fig. 5 / RBC Fig. 3 (accuracy vs noise rate). Reads only the aggregated cells, i.e. the
    record's `metrics.<report.metric>` (so it also works from W&B). Columns are placed evenly
    in sorted order; hollow markers are cells with fewer seeds than expected.
    """
    spec, cells = data.spec, data.cells[data.cells["n"] > 0]
    if not spec.columns:
        raise FigureError("error_vs_setting needs a table with column keys (the x axis).")
    if cells.empty:
        raise FigureError("error_vs_setting has no cell with a completed run to plot.")
    columns = _sorted_labels(data.cells, list(spec.short.values())[len(spec.rows) :])
    x_of = {label: i for i, label in enumerate(columns)}
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for row, group in cells.groupby("row", sort=False):
        group = group.sort_values("column", key=lambda s: s.map(x_of))
        x = group["column"].map(x_of).to_numpy()
        line = ax.errorbar(
            x, group["mean"], yerr=group["ci95"].fillna(0), marker="o", capsize=3, label=row
        )
        short = group["n"].to_numpy() < spec.seeds
        ax.plot(
            x[short],
            group["mean"].to_numpy()[short],
            "o",
            markerfacecolor="white",
            color=line[0].get_color(),
            zorder=3,
        )
    if (cells["n"] < spec.seeds).any():
        label = f"fewer than {spec.seeds} seeds"
        ax.plot([], [], "o", markerfacecolor="white", color="black", label=label)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_xlabel(" / ".join(list(spec.short.values())[len(spec.rows) :]))
    ax.set_ylabel(value_label(spec))
    ax.set_title(spec.title, fontsize=9, wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title=" / ".join(list(spec.short.values())[: len(spec.rows)]))
    return fig


@FIGURES.register("weight_histograms")
def weight_histograms(data: FigureData) -> Figure:
    """Histograms of n·w_i (1 = the uniform weight) for clean vs flipped training examples.

    L2RW Fig. 3. Reads the record's `weights_hist` = {"bins": edges (len B+1), "clean": counts
    (len B), "flipped": counts (len B)}, summed over a cell's runs; one panel per cell.
    """
    hists = {}
    for run in data.runs:
        h = run.record.data.weights_hist
        if not h or not h.get("bins"):
            continue
        clean, flipped = np.asarray(h["clean"], float), np.asarray(h["flipped"], float)
        old = hists.get((run.row, run.column))
        hists[(run.row, run.column)] = (
            np.asarray(h["bins"], float),
            clean + (old[1] if old else 0),
            flipped + (old[2] if old else 0),
        )
    if not hists:
        raise FigureError("weight_histograms needs `weights_hist` in the records; none has it.")
    fig, axes = _panels(data, hists)
    for key, ax in axes.items():
        bins, clean, flipped = hists[key]
        for counts, name, color in ((clean, "clean", "tab:blue"), (flipped, "flipped", "tab:red")):
            if counts.sum() > 0:
                ax.stairs(
                    counts / counts.sum(),
                    bins,
                    label=f"{name} ({int(counts.sum())})",
                    color=color,
                    fill=True,
                    alpha=0.45,
                )
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("n·w_i (1 = uniform)", fontsize=7)
        ax.set_ylabel("fraction of examples", fontsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(f"{data.spec.title}: example weights, clean vs flipped labels", fontsize=9)
    return fig


@FIGURES.register("confusion")
def confusion(data: FigureData) -> Figure:
    """Row-normalised confusion matrices (rows = true class, columns = predicted), final test.

    L2RW Fig. 6. Reads the record's `metrics.confusion_before_ft` (the trained model's, when a
    fine-tuning stage followed) or else `metrics.confusion` (K x K counts), summed over a cell's
    runs before normalising; one panel per cell.
    """
    mats = {}
    for run in data.runs:
        metrics = run.record.data.metrics
        m = metrics.get("confusion_before_ft") or metrics.get("confusion")
        if m:
            key = (run.row, run.column)
            mats[key] = np.asarray(m, float) + mats.get(key, 0)
    if not mats:
        raise FigureError("confusion needs `metrics.confusion` in the records; none has it.")
    fig, axes = _panels(data, mats)
    for key, ax in axes.items():
        counts = mats[key]
        totals = counts.sum(1, keepdims=True)
        norm = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
        image = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        k = len(norm)
        if k <= 10:
            for i in range(k):
                for j in range(k):
                    if not np.isnan(norm[i, j]):
                        ax.text(
                            j,
                            i,
                            f"{norm[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=5,
                            color="white" if norm[i, j] > 0.5 else "black",
                        )
        if k <= 20:
            ax.set_xticks(range(k))
            ax.set_yticks(range(k))
        ax.set_xlabel("predicted class", fontsize=7)
        ax.set_ylabel("true class", fontsize=7)
    fig.colorbar(image, ax=list(axes.values()), shrink=0.6)
    stage = " before +FT" if data.spec.stages else ""
    fig.suptitle(f"{data.spec.title}: test confusion{stage} (row-normalised)", fontsize=9)
    return fig


@FIGURES.register("training_curves")
def training_curves(data: FigureData) -> Figure:
    """Test accuracy and training loss vs step, mean over seeds, one line per row.

    L2RW Fig. 7. Reads `metrics.jsonl` beside result.json: one JSON object per evaluation with
    keys `step`, `test/acc` (fraction) and `train/loss`. One column of panels per column label.
    """
    logs = []
    for run in data.runs:
        path = _artifact(run, METRICS_NAME)
        if path is not None:
            log = pd.read_json(path, lines=True).reindex(columns=["step", *CURVES])
            logs.append(log.assign(row=run.row, column=run.column))
    if not logs:
        raise FigureError(f"training_curves needs {METRICS_NAME} beside the records; none found.")
    curves = pd.concat(logs, ignore_index=True)
    columns = [c for c in dict.fromkeys(data.cells["column"]) if c in set(curves["column"])]
    fig = new_figure(3.2 * len(columns) + 1, 5.2)
    axes = fig.subplots(2, len(columns), squeeze=False)
    for j, column in enumerate(columns):
        part = curves[curves["column"] == column]
        for row, group in part.groupby("row", sort=False):
            mean = group.groupby("step")[CURVES].mean()
            axes[0, j].plot(mean.index, 100 * mean["test/acc"], label=row)
            axes[1, j].plot(mean.index, mean["train/loss"], label=row)
        axes[0, j].set_title(column or data.spec.name, fontsize=8)
        axes[0, j].set_ylabel("test accuracy (%)", fontsize=7)
        axes[1, j].set_ylabel("training loss", fontsize=7)
        axes[1, j].set_xlabel("step", fontsize=7)
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=6)
    fig.suptitle(f"{data.spec.title}: training curves (mean over seeds)", fontsize=9)
    return fig


@FIGURES.register("toy_boundaries")
def toy_boundaries(data: FigureData) -> Figure:
    """Decision boundaries and the selected meta samples on the 2-D toy data (RBC Fig. 1).

    Reads `toy_boundary.npz` beside result.json (the lowest seed of each cell), with arrays
    `xx`, `yy` (G x H grid coordinates, as from np.meshgrid), `prob` (G x H, P(class 1) of the
    trained model), `x_train` (N x 2), `y_train` (N, labels as trained on), `selected` (M indices
    into x_train of the meta samples) and optionally `clean_prob` (G x H, the model trained on
    clean labels: the expected classifier, drawn dotted). Titles show `metrics.test_acc`.
    """
    arrays = _first_artifacts(data, TOY_BOUNDARY)
    fig, axes = _panels(data, arrays)
    for key, ax in axes.items():
        run, z = arrays[key]
        ax.contourf(
            z["xx"], z["yy"], z["prob"], levels=np.linspace(0, 1, 11), cmap="RdYlGn", alpha=0.35
        )
        ax.contour(z["xx"], z["yy"], z["prob"], levels=[0.5], colors="k", linewidths=1)
        if "clean_prob" in z:
            ax.contour(
                z["xx"],
                z["yy"],
                z["clean_prob"],
                levels=[0.5],
                colors="k",
                linestyles=":",
                linewidths=1.5,
            )
        x, y = z["x_train"], z["y_train"]
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdYlGn", s=6, alpha=0.6, vmin=0, vmax=1)
        sel = np.asarray(z["selected"], int)
        ax.scatter(
            x[sel, 0],
            x[sel, 1],
            marker="*",
            s=140,
            c=y[sel],
            cmap="RdYlGn",
            vmin=0,
            vmax=1,
            edgecolors="k",
            linewidths=1,
        )
        acc = run.record.data.metrics.get("test_acc")
        if acc is not None:
            ax.set_title(
                f"{ax.get_title()}\ntest acc {100 * acc:.1f}% (seed {run.seed})", fontsize=7
            )
    fig.suptitle(f"{data.spec.title}: decision boundaries, ★ = meta samples", fontsize=9)
    return fig


@FIGURES.register("tsne_features")
def tsne_features(data: FigureData) -> Figure:
    """t-SNE of the features a selector clustered, with the cluster centroids marked (RBC Fig. 4).

    Reads `features.npz` beside result.json (the lowest seed of each cell): `features` (N x D),
    `labels` (N, class of each point) and the centroids as `centroids` (K x D) and/or
    `centroid_indices` (K indices into features). At most 2,000 points are embedded.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    arrays = _first_artifacts(data, FEATURES)
    fig, axes = _panels(data, arrays)
    for key, ax in axes.items():
        _, z = arrays[key]
        feats, labels = np.asarray(z["features"], float), np.asarray(z["labels"])
        rng = np.random.default_rng(0)
        keep = np.sort(rng.permutation(len(feats))[:TSNE_MAX_POINTS])
        cents = [np.asarray(z["centroids"], float)] if "centroids" in z else []
        if "centroid_indices" in z:
            cents.append(feats[np.asarray(z["centroid_indices"], int)])
        points = np.concatenate([feats[keep], *cents]) if cents else feats[keep]
        perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
        # One thread: OpenMP's busy-waiting threads make small t-SNEs 100x slower on a busy CPU.
        with threadpool_limits(1):
            tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=0)
            emb = tsne.fit_transform(points)
        ax.scatter(
            emb[: len(keep), 0],
            emb[: len(keep), 1],
            c=labels[keep],
            cmap="tab10",
            vmin=0,
            vmax=9,
            s=4,
        )
        if cents:
            ax.scatter(
                emb[len(keep) :, 0],
                emb[len(keep) :, 1],
                marker="*",
                s=120,
                c="k",
                label="centroids",
            )
            ax.legend(fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{data.spec.title}: t-SNE of the clustered features", fontsize=9)
    return fig


def _panels(data: FigureData, present: dict) -> tuple[Figure, dict[tuple[str, str], Axes]]:
    """One panel per (row, column) cell in `present`, in table order: a grid of rows x columns,
    or, for a table with one column, the rows wrapped four to a line."""
    rows = [
        r for r in dict.fromkeys(run.row for run in data.runs) if any(k[0] == r for k in present)
    ]
    cols = [c for c in dict.fromkeys(data.cells["column"]) if any(k[1] == c for k in present)]
    if len(cols) == 1 and len(rows) > PANELS_PER_LINE:
        places = {(row, cols[0]): divmod(i, PANELS_PER_LINE) for i, row in enumerate(rows)}
        shape = (-(-len(rows) // PANELS_PER_LINE), PANELS_PER_LINE)
    else:
        places = {(row, col): (i, j) for i, row in enumerate(rows) for j, col in enumerate(cols)}
        shape = (len(rows), len(cols))
    fig = new_figure(2.6 * shape[1] + 0.8, 2.4 * shape[0] + 0.6)
    grid = fig.subplots(*shape, squeeze=False)
    axes = {}
    for ax in grid.flat:
        ax.set_axis_off()
    for key, (i, j) in places.items():
        if key in present:
            ax = grid[i, j]
            ax.set_axis_on()
            ax.set_title(" · ".join(x for x in key if x), fontsize=7)
            ax.tick_params(labelsize=6)
            axes[key] = ax
    return fig, axes


def _artifact(run: Run, name: str) -> Path | None:
    if run.record.path is None:
        return None
    path = run.record.path / name
    return path if path.exists() else None


def _first_artifacts(data: FigureData, name: str) -> dict[tuple[str, str], tuple[Run, dict]]:
    """{(row, column): (run, arrays)} from the lowest seed of each cell that saved `name`."""
    found = {}
    for run in sorted(data.runs, key=lambda r: r.seed):
        key = (run.row, run.column)
        path = _artifact(run, name)
        if key not in found and path is not None:
            with np.load(path) as z:
                found[key] = (run, {k: z[k] for k in z.files})
    if not found:
        local = any(r.record.path is not None for r in data.runs)
        where = "no averaged run saved it" if local else "W&B runs have no local files"
        raise FigureError(f"This figure needs {name} beside result.json; {where}.")
    return found


def _sorted_labels(cells: pd.DataFrame, keys: list[str]) -> list[str]:
    """Column labels ordered by their values (numbers numerically)."""
    pairs = dict.fromkeys(
        zip(cells["column"], cells[keys].itertuples(index=False, name=None), strict=True)
    )
    return [label for label, _ in sorted(pairs, key=lambda pair: value_order(pair[1]))]
