"""A table's text outputs: Markdown (table, paper's numbers, provenance, problems), CSV, LaTeX.

Each returns a string and writes nothing; `l2rw.report.build` writes them all at once.
"""

import math
from dataclasses import dataclass

import pandas as pd

from l2rw.report.aggregate import Aggregate
from l2rw.report.frame import value_label
from l2rw.report.paper import PaperRef, paper_cells, unmatched_rows
from l2rw.report.provenance import Provenance
from l2rw.report.spec import STAGE, TableSpec

FLAG_MARK = "†"
CELL_LEGEND = (
    "each cell is the mean ± the 95% CI half-width (Student t over seeds), with the number of "
    f"seeds in parentheses; {FLAG_MARK} marks a cell listed under Problems"
)


@dataclass(frozen=True)
class Report:
    spec: TableSpec
    agg: Aggregate
    provenance: Provenance
    paper: PaperRef | None
    # File names of the figures written beside the table.
    figures: list[str]


def cell_text(mean: float, ci: float, n: int, flagged: bool) -> str:
    """Cell text such as "12.34 ± 0.56 (3)": no ± for one seed, "—" for no run."""
    if n == 0:
        return "—"
    text = f"{mean:.2f}" if math.isnan(ci) else f"{mean:.2f} ± {ci:.2f}"
    return f"{text} ({n}){FLAG_MARK if flagged else ''}"


def to_markdown(report: Report) -> str:
    spec, agg = report.spec, report.agg
    lines = [
        f"# {spec.title}",
        "",
        f"Ours at scale `{spec.scale}`, {spec.seeds} seed(s) expected per cell. Value: "
        f"{value_label(spec)}; {CELL_LEGEND}.",
        "",
        *[
            f"**Made under an earlier protocol**: {p.text}\n"
            for p in agg.problems
            if p.kind == "earlier_protocol"
        ],
        *_markdown_table(_corner(spec), _grid(report)),
        "",
    ]
    for figure in report.figures:
        lines += [f"![{spec.title}]({figure})", ""]
    lines += _markdown_paper(report)
    lines += ["## Provenance", ""]
    lines += [
        f"- **{key}**: `{value}`" if "command" in key else f"- **{key}**: {value}"
        for key, value in report.provenance.items
    ]
    lines += ["", "## Problems", ""]
    if agg.problems:
        lines += [f"- **{p.kind.replace('_', ' ')}**: {p.text}" for p in agg.problems]
    else:
        lines.append("None: every expected cell has its seeds and every run read was averaged.")
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    """Long form, one line per cell, after `# key: value` provenance lines
    (read it back with `pandas.read_csv(path, comment="#")`)."""
    spec, cells = report.spec, report.agg.cells
    paper = paper_cells(report.paper) if report.paper else {}
    out = cells[[*spec.short.values(), "mean", "ci95", "sd", "n"]].copy()
    out[["mean", "ci95", "sd"]] = out[["mean", "ci95", "sd"]].round(4)
    out["expected_seeds"] = spec.seeds
    out["seeds"] = cells["seeds"].map(_join)
    out["missing_seeds"] = cells["missing_seeds"].map(_join)
    out["scale"] = spec.scale
    out["metric"] = cells[spec.short[STAGE]].map(dict(spec.stages)) if spec.stages else spec.metric
    out["as_error"] = spec.as_error
    out["flags"] = cells["flags"].map(_join)
    printed = [
        paper.get((r, c), ("", "")) for r, c in zip(cells["row"], cells["column"], strict=True)
    ]
    out["paper_value"] = [value for value, _ in printed]
    out["paper_pm"] = [pm for _, pm in printed]
    header = "".join(f"# {key}: {value}\n" for key, value in report.provenance.items)
    if report.paper:
        header += f"# paper: {report.paper.citation}\n"
    return header + out.to_csv(index=False)


def to_latex(report: Report) -> str:
    spec = report.spec
    lines = [f"% {key}: {value}" for key, value in report.provenance.items]
    caption = (
        f"{_tex(spec.title)}. Ours at scale {_tex(spec.scale)}: {_tex(value_label(spec))}; "
        f"{_tex(CELL_LEGEND)}."
    )
    lines += _latex_table(_corner(spec), _grid(report, tex=True), caption)
    paper = _paper_grid(report)
    if paper is not None:
        lines += _latex_table(
            _corner(spec), paper.map(_tex), f"As printed in {_tex(report.paper.citation)}."
        )
    return "\n".join(lines) + "\n"


def _grid(report: Report, tex: bool = False) -> pd.DataFrame:
    """Row labels x column labels of cell texts, in table order; "—" where no cell."""
    cells = report.agg.cells
    grid = pd.DataFrame(
        "—", index=list(dict.fromkeys(cells["row"])), columns=list(dict.fromkeys(cells["column"]))
    )
    for c in cells.itertuples():
        text = cell_text(c.mean, c.ci95, c.n, bool(c.flags))
        grid.loc[c.row, c.column] = _tex(text) if tex else text
    return grid


def _paper_grid(report: Report) -> pd.DataFrame | None:
    """The paper's printed values on our rows x columns (labelled "ours (paper's)")."""
    ref = report.paper
    if ref is None:
        return None
    printed = paper_cells(ref)
    if not printed:
        return None
    cells = report.agg.cells
    rows = [r for r in dict.fromkeys(cells["row"]) if any(k[0] == r for k in printed)]
    cols = [c for c in dict.fromkeys(cells["column"]) if any(k[1] == c for k in printed)]
    if not rows or not cols:  # e.g. an analogue's columns, which the paper does not have
        return None
    data = {col: [_printed(*printed.get((row, col), ("—", ""))) for row in rows] for col in cols}
    grid = pd.DataFrame(data, index=rows)
    grid.index = [f"{r} ({ref.rows[r]})" for r in rows]
    grid.columns = [f"{c} ({ref.columns[c]})" if c else ref.columns[c] for c in cols]
    return grid


def _printed(value: str, pm: str) -> str:
    """A paper's number as printed: "value ± pm", or the value alone when it prints no ±."""
    return " ± ".join(x for x in (value, pm) if x)


def _markdown_paper(report: Report) -> list[str]:
    ref = report.paper
    if ref is None:
        return ["## The paper's numbers", "", "No paper table is mapped to this table.", ""]
    lines = ["## The paper's numbers", "", f"From {ref.citation}, as printed (not ours).", ""]
    grid = _paper_grid(report)
    if grid is not None:
        lines += [*_markdown_table(f"{_corner(report.spec)} (paper's label)", grid), ""]
        missing = unmatched_rows(ref)
        if missing:
            listed = "; ".join(
                f"{row}: " + ", ".join(f"{col} {_printed(v, pm)}" for col, v, pm in vals)
                for row, vals in missing.items()
            )
            lines += [
                f"Paper rows with no run of ours (the paper's numbers, as reported): {listed}.",
                "",
            ]
    elif ref.rows or ref.columns:
        lines += ["The paper prints no numbers that map onto this table's cells.", ""]
    if ref.note:
        lines += [ref.note, ""]
    return lines


def _corner(spec: TableSpec) -> str:
    names = list(spec.short.values())
    rows, cols = names[: len(spec.rows)], names[len(spec.rows) :]
    return " / ".join(rows) + (f" \\ {' / '.join(cols)}" if cols else "")


def _markdown_table(corner: str, grid: pd.DataFrame) -> list[str]:
    header = [corner, *[str(c) if c != "" else "value" for c in grid.columns]]
    lines = [_md_row(header), _md_row(["---"] + ["---:"] * len(grid.columns))]
    lines += [
        _md_row([str(i), *map(str, row)])
        for i, row in zip(grid.index, grid.to_numpy(), strict=True)
    ]
    return lines


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _latex_table(corner: str, grid: pd.DataFrame, caption: str) -> list[str]:
    header = [_tex(corner), *[_tex(str(c)) if c != "" else "value" for c in grid.columns]]
    body = [
        " & ".join([_tex(str(i)), *row]) + r" \\"
        for i, row in zip(grid.index, grid.to_numpy(), strict=True)
    ]
    return [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{caption}}}",
        f"\\begin{{tabular}}{{l{'r' * len(grid.columns)}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]


TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "—": "--",
    "·": r"$\cdot$",
    "−": "-",
}


def _tex(text: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in text)


def _join(values: list) -> str:
    return ";".join(str(v) for v in values)
