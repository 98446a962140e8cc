"""The RBC paper's checks of its theorems (Tables 4 and 5, `l2rw.selection.theorems`): D_j against
a hand computation on a tiny model and batch, the stable-example count against a brute-force
reassignment, and a selection run that records both."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_cfg
from omegaconf import OmegaConf
from test_selection_pipeline import toy
from torch import nn

from l2rw.report.spec import load_spec
from l2rw.selection.selectors import Candidates, _theorem_checks
from l2rw.selection.theorems import (
    dominance_ratios,
    dominance_summary,
    last_layer_products,
    quantile,
    row_products,
    stable_examples,
    theorem_summary,
)
from l2rw.train import run

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------- Theorem 1: D_j


def test_dominance_ratio_by_hand():
    terms = torch.tensor(
        [
            [3.0, -1.0, 2.0],  # positive part 5 over negative 1: 5
            [1.0, 2.0, 0.0],  # all nonzero terms positive: inf
            [-4.0, 1.0, -2.0],  # negative part 6 dominates positive 1: 6
            [0.0, 0.0, 0.0],  # no term: undefined
            [-1.0, -0.5, 0.0],  # all negative: inf
            [2.0, -2.0, 0.0],  # balanced: 1
        ]
    )
    d = dominance_ratios(terms)
    assert d[[0, 2, 5]].tolist() == [5.0, 6.0, 1.0]
    assert math.isinf(d[1]) and math.isinf(d[4]) and d[1] > 0 and d[4] > 0
    assert math.isnan(d[3])


def test_dominance_summary_by_hand_and_as_strict_json():
    d = torch.tensor([5.0, math.inf, 6.0, math.nan], dtype=F64)
    summary = dominance_summary(d)
    # Sorted defined values [5, 6, inf]: position 0.05 * 2 = 0.1 between 5 and 6.
    assert summary == {
        "theorem1_d_min": 5.0,
        "theorem1_d_q05": pytest.approx(5.1),
        "theorem1_d_inf_fraction": pytest.approx(1 / 3),
        "theorem1_examples": 3,
    }
    all_inf = dominance_summary(torch.tensor([math.inf, math.inf, math.nan]))
    assert all_inf["theorem1_d_min"] == all_inf["theorem1_d_q05"] == "inf"
    assert all_inf["theorem1_d_inf_fraction"] == 1.0
    assert strict_json(json.dumps(all_inf)) == all_inf
    assert dominance_summary(torch.tensor([math.nan]))["theorem1_examples"] == 0


def test_quantile_is_numpys_linear_one_and_reaches_inf_only_through_an_inf():
    values = torch.tensor([4.0, 1.0, 9.0, 2.5, 7.0, 3.0, 8.5])
    for q in (0.0, 0.05, 0.3, 0.5, 1.0):
        assert quantile(values, q) == pytest.approx(float(np.quantile(values.numpy(), q)))
    with_inf = torch.tensor([1.0, 2.0] + [math.inf] * 38)
    assert quantile(with_inf, 0.0) == 1.0
    assert quantile(with_inf, 1 / 39) == 2.0  # exactly the second value
    assert math.isinf(quantile(with_inf, 0.05))


class Affine(nn.Module):
    """A last linear layer on a ReLU feature map: logits z = W relu(V x) + b."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(2, 3)
        self.classifier = nn.Linear(3, 3)

    def forward(self, x):
        return self.classifier(F.relu(self.hidden(x)))


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return Affine().double().eval()


def autograd_last_layer(model: nn.Module, x, y):
    """Each example's gradient of CE (or of logsumexp without labels) with respect to the last
    layer's [W | b], by autograd, one example at a time."""
    rows = []
    for j in range(len(x)):
        z = model(x[j : j + 1])
        loss = torch.logsumexp(z, 1).sum() if y is None else F.cross_entropy(z, y[j : j + 1])
        gw, gb = torch.autograd.grad(loss, [model.classifier.weight, model.classifier.bias])
        rows.append(torch.cat([gw, gb[:, None]], 1).flatten())
    return torch.stack(rows)


def hand_ratio(terms: list[float]) -> float:
    positive = sum(t for t in terms if t > 0)
    negative = -sum(t for t in terms if t < 0)
    if positive == negative == 0:
        return math.nan
    return (
        max(positive, negative) / min(positive, negative) if min(positive, negative) else math.inf
    )


def test_d_j_on_a_tiny_model_against_autograd_gradients_and_a_hand_split():
    """Two snapshots, five training examples with observed labels, three meta samples with
    clean labels: <G_j, G_meta,i> summed over the snapshots, then split by sign by hand."""
    models = [tiny_net(0), tiny_net(1)]
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(5, 2, generator=g, dtype=F64), torch.tensor([0, 1, 2, 0, 1])
    mx, my = torch.randn(3, 2, generator=g, dtype=F64), torch.tensor([2, 0, 1])
    terms = sum(autograd_last_layer(m, x, y) @ autograd_last_layer(m, mx, my).T for m in models)
    products = last_layer_products(models, x, y, mx, my)
    torch.testing.assert_close(products, terms)
    expected = [hand_ratio(row) for row in terms.tolist()]
    got = dominance_ratios(products).tolist()
    assert all(math.isfinite(e) for e in expected)  # the labels give terms of both signs here
    assert got == pytest.approx(expected)


def test_label_free_terms_of_a_relu_net_share_a_sign_so_every_d_j_is_inf():
    """Why the check uses the gradients with labels: softmax > 0 and relu features >= 0."""
    models = [tiny_net(0), tiny_net(1)]
    g = torch.Generator().manual_seed(4)
    x, mx = torch.randn(6, 2, generator=g, dtype=F64), torch.randn(2, 2, generator=g, dtype=F64)
    products = last_layer_products(models, x, None, mx, None)
    terms = sum(
        autograd_last_layer(m, x, None) @ autograd_last_layer(m, mx, None).T for m in models
    )
    torch.testing.assert_close(products, terms)
    assert (terms > 0).all()
    assert dominance_ratios(products).isinf().all()
    summary = theorem_summary(products, products)
    assert summary["theorem1_d_min"] == summary["theorem1_d_q05"] == "inf"
    assert summary["theorem2_stable"] == summary["theorem2_clustered"] == 6


def test_products_are_computed_in_chunks_of_rows(monkeypatch):
    import l2rw.selection.theorems as theorems

    models = [tiny_net(0)]
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(7, 2, generator=g, dtype=F64), torch.randint(0, 3, (7,), generator=g)
    mx, my = torch.randn(2, 2, generator=g, dtype=F64), torch.tensor([0, 2])
    whole = last_layer_products(models, x, y, mx, my)
    G = torch.randn(9, 12, generator=g, dtype=F64)
    rows, refs = torch.tensor([8, 0, 3, 4, 5]), torch.tensor([1, 8])
    monkeypatch.setattr(theorems, "_CHUNK_ELEMENTS", 24)  # two rows of 12 columns at a time
    torch.testing.assert_close(last_layer_products(models, x, y, mx, my), whole)
    torch.testing.assert_close(row_products(G, rows, refs), G[rows] @ G[refs].T)
    assert row_products(G, rows[:0], refs).shape == (0, 2)


# ---------------------------------------------------------------- Theorem 2: stable examples


def brute_force_stable(free_g, free_meta, aware_g, aware_meta) -> int:
    """Reassign every row to its most similar meta sample under each similarity, with loops."""

    def closest(row, meta):
        best, best_i = -1.0, None
        for i, m in enumerate(meta):
            sim = abs(sum(a * b for a, b in zip(row, m, strict=True)))
            if sim > best:
                best, best_i = sim, i
        return best_i

    return sum(
        closest(f, free_meta) == closest(a, aware_meta)
        for f, a in zip(free_g.tolist(), aware_g.tolist(), strict=True)
    )


@pytest.mark.parametrize("seed", range(5))
def test_stable_count_matches_a_brute_force_reassignment(seed):
    g = torch.Generator().manual_seed(seed)
    n, m, d = 40, 4, 6
    free_g, free_meta = torch.randn(n, d, generator=g, dtype=F64), torch.randn(m, d, generator=g)
    free_meta = free_meta.double()
    # The label-aware features: the label-free ones plus a perturbation of growing size.
    aware_g = free_g + seed * 0.3 * torch.randn(n, d, generator=g, dtype=F64)
    aware_meta = free_meta + seed * 0.3 * torch.randn(m, d, generator=g, dtype=F64)
    stable = stable_examples(free_g @ free_meta.T, aware_g @ aware_meta.T)
    assert int(stable.sum()) == brute_force_stable(free_g, free_meta, aware_g, aware_meta)
    if seed == 0:
        assert stable.all()


def test_stable_uses_the_absolute_similarity_and_ties_go_to_the_first():
    free = torch.tensor([[1.0, -3.0], [2.0, 2.0], [0.5, 0.1]])
    aware = torch.tensor([[-5.0, 1.0], [1.0, 1.0], [0.1, -0.5]])
    # Row 0: |-3| wins for free (1), |-5| for aware (0); row 1: both tie, first; row 2: 0 vs 1.
    assert stable_examples(free, aware).tolist() == [False, True, False]
    with pytest.raises(ValueError):
        stable_examples(free, aware[:, :1])


# ---------------------------------------------------------------- in the selector and a run


def candidates(label_free: bool) -> Candidates:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(30, 2, generator=g, dtype=F64)
    y_true = torch.randint(0, 3, (30,), generator=g)
    y = torch.where(torch.arange(30) % 3 == 0, (y_true + 1) % 3, y_true)  # a third mislabelled
    opts = OmegaConf.create({"theorem_checks": True})
    models = [tiny_net(0), tiny_net(1)]
    return Candidates(x, y, x[:0], y[:0], models, label_free, 0, 1, opts, y_true=y_true)


def test_selector_checks_use_observed_labels_for_candidates_and_true_ones_for_picks():
    keep, picked = torch.arange(0, 30, 2), torch.tensor([4, 9, 20])
    c = candidates(label_free=True)
    free_feats = torch.cat([autograd_last_layer(m, c.x, None) for m in c.models], 1)
    checks = _theorem_checks(c, free_feats, keep, picked)
    aware = sum(
        autograd_last_layer(m, c.x[keep], c.y[keep])
        @ autograd_last_layer(m, c.x[picked], c.y_true[picked]).T
        for m in c.models
    )
    free = free_feats[keep] @ free_feats[picked].T
    expected = theorem_summary(aware, free)
    assert {k: v for k, v in checks.items() if k != "theorem_checks_s"} == pytest.approx(expected)
    assert checks["theorem2_clustered"] == 15 and checks["theorem_checks_s"] >= 0
    # Clustering the full gradients (no label noise), the label-free side is computed anew.
    c_full = candidates(label_free=False)
    full_feats = torch.cat([autograd_last_layer(m, c.x, c.y) for m in c.models], 1)
    checks_full = _theorem_checks(c_full, full_feats, keep, picked)
    checks.pop("theorem_checks_s"), checks_full.pop("theorem_checks_s")
    assert checks_full == pytest.approx(checks)
    c_full.options.theorem_checks = False
    assert _theorem_checks(c_full, full_feats, keep, picked) == {}


@pytest.mark.parametrize("selector", ["rbc", "kmeans"])
def test_a_selection_run_records_the_checks(tiny_cfg, tmp_path, selector):
    cfg = toy(tiny_cfg, tmp_path, f"selector={selector}", "selector.theorem_checks=true")
    record = run(cfg, tmp_path / "job")
    assert record.status == "completed", record.error
    strict_json((tmp_path / "job" / "result.json").read_text())
    m = record.metrics
    # 598 candidates in the round, the 299 nearest the warm-up's meta samples dropped.
    assert m["theorem2_clustered"] == 299 and 0 <= m["theorem2_stable"] <= 299
    assert m["theorem2_stable_fraction"] == pytest.approx(m["theorem2_stable"] / 299)
    assert 0 < m["theorem1_examples"] <= 299
    assert 0 <= m["theorem1_d_inf_fraction"] <= 1
    d_min, d_q05 = (
        math.inf if v == "inf" else v for v in (m["theorem1_d_min"], m["theorem1_d_q05"])
    )
    assert 1 <= d_min <= d_q05
    checks = {k: v for k, v in m.items() if k.startswith("theorem")}
    assert record.selection["rounds"][1]["theorem_checks"] == checks
    saved = strict_json((tmp_path / "job" / "round-1.json").read_text())
    assert saved["theorem_checks"] == checks


def test_checks_are_off_by_default_and_not_an_option_of_gbc(tiny_cfg, tmp_path):
    record = run(toy(tiny_cfg, tmp_path, "selector=rbc"), tmp_path / "job")
    assert not [k for k in record.metrics if k.startswith("theorem")]
    assert "theorem_checks" not in record.selection["rounds"][1]
    # GBC's schema has no such key, so the config does not compose.
    with pytest.raises(Exception, match="theorem_checks"):
        toy(tiny_cfg, tmp_path, "selector=gbc", "selector.theorem_checks=true")


# ---------------------------------------------------------------- the tables


def run_config(table: str, scale: str, *overrides: str) -> dict:
    """A job's resolved config without what only the report reads."""
    config = OmegaConf.to_container(
        compose_cfg([f"+table={table}", f"scale={scale}", *overrides]), resolve=True
    )
    config.pop("report")
    for values in config["scales"].values():
        values.pop("title")
    return config


@pytest.mark.parametrize(
    ("scale", "datasets", "model"),
    [("cpu", ["mnist"], "lenet5"), ("full", ["cifar10", "cifar100"], "resnet34")],
)
def test_tables_4_and_5_report_one_sweep_of_rbc_with_the_checks(scale, datasets, model):
    spec4 = load_spec("rbc_table4", [f"scale={scale}"])
    spec5 = load_spec("rbc_table5", [f"scale={scale}"])
    assert spec4.name == spec5.name == "rbc_table4"
    assert spec4.expected["dataset.name"] == spec5.expected["dataset.name"] == datasets
    assert spec4.expected["noise.name"] == ["uniform_flip", "adversarial"]
    assert dict(spec4.stages)["minimum"] == "theorem1_d_min"
    assert dict(spec5.stages) == {
        "count": "theorem2_stable",
        "clustered": "theorem2_clustered",
        "fraction": "theorem2_stable_fraction",
    }
    assert ("MNIST analogue" in spec4.title) == (scale == "cpu")
    for dataset in datasets:
        job = (f"dataset={dataset}", f"model={model}", "noise=adversarial", "selector=rbc")
        config = run_config("rbc_table4", scale, *job)
        assert config == run_config("rbc_table5", scale, *job)
        assert config["selector"]["theorem_checks"] is True
        assert config["model"]["name"] == model and config["dataset"]["name"] == dataset
