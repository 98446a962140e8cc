"""Every registered figure renders a non-empty PNG from small records and their artifacts."""

import pytest
from test_report_fakes import make_record, write_artifacts, write_record

from l2rw.report.build import Options, build_table
from l2rw.report.figures import FIGURES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def output_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    for method, frac, seed, acc in [
        ("l2rw", 0.995, 0, 0.95),
        ("l2rw", 0.995, 1, 0.93),
        ("l2rw", 0.9, 0, 0.97),
        ("baseline", 0.995, 0, 0.55),
        ("baseline", 0.9, 0, 0.90),
        ("baseline", 0.9, 1, 0.92),
    ]:
        write_artifacts(write_record(root, make_record(method, frac, seed, acc)), seed)
    return root


def test_the_registry_holds_every_figure_of_both_papers():
    assert set(FIGURES.names()) == {
        "error_vs_setting",
        "weight_histograms",
        "confusion",
        "training_curves",
        "toy_boundaries",
        "tsne_features",
    }


@pytest.mark.parametrize("figure", FIGURES.names())
def test_figure_renders_a_png(figure, output_root, tmp_path):
    options = Options(output_root=str(output_root), results_dir=str(tmp_path))
    built = build_table("l2rw_fig2", [f"report.figure={figure}"], options)
    png = (tmp_path / "l2rw_fig2_cpu.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000
    assert not [p for p in built.report.agg.problems if p.kind == "figure"]
    assert "![" in (tmp_path / "l2rw_fig2_cpu.md").read_text()


def test_a_figure_without_its_artifact_is_a_listed_problem(tmp_path):
    root = tmp_path / "outputs"
    write_record(root, make_record())
    options = Options(output_root=str(root), results_dir=str(tmp_path / "results"))
    built = build_table("l2rw_fig2", ["report.figure=toy_boundaries"], options)
    (problem,) = [p for p in built.report.agg.problems if p.kind == "figure"]
    assert "toy_boundary.npz" in problem.text
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "l2rw_fig2_cpu.csv",
        "l2rw_fig2_cpu.md",
        "l2rw_fig2_cpu.tex",
    ]


def test_extra_figures_are_written_beside_the_main_one(output_root, tmp_path):
    options = Options(output_root=str(output_root), results_dir=str(tmp_path))
    built = build_table("l2rw_fig2", ["report.extra_figures=[weight_histograms]"], options)
    extra = tmp_path / "l2rw_fig2_cpu_weight_histograms.png"
    assert extra.read_bytes().startswith(PNG_SIGNATURE)
    assert (tmp_path / "l2rw_fig2_cpu.png").exists()
    assert built.report.figures == ["l2rw_fig2_cpu.png", "l2rw_fig2_cpu_weight_histograms.png"]
    assert "(l2rw_fig2_cpu_weight_histograms.png)" in (tmp_path / "l2rw_fig2_cpu.md").read_text()
