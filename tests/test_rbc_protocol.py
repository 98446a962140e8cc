"""The RBC protocol switches of issue #24: where each round and the warm-up start
(`selector.round_init`, `selector.warmup_init` with the authors' Stage A), the authors'
permutation noise, MNIST's standard normalisation and the batch-scaled meta learning rate."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from launches import capture_info, phase_launches
from scipy import stats

import l2rw.methods.loop as loop
import l2rw.methods.phase_cache as phase_cache
import l2rw.methods.phase_store as phase_store
import l2rw.methods.reweighting as reweighting
import l2rw.methods.selection as selection
from l2rw.config.validate import validate
from l2rw.data.noise import noise_process
from l2rw.data.transforms import Preprocess
from l2rw.errors import ConfigError
from l2rw.methods.reweighting import meta_step_size
from l2rw.train import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOY = (
    "dataset=toy2d",
    "model=mlp",
    "protocol=rbc",
    "method=meta_reweight",
    "method.meta_lr=10",
    "noise=uniform_flip",
    "noise.rate=0.6",
    "train.batch_size=32",
    "train.length=8",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "optimizer.lr=0.1",
    "selector=rbc",
    "selector.snapshot_every=1",
    "device=cpu",
)


def toy(tiny_cfg, tmp_path: Path, *overrides: str):
    return tiny_cfg(*TOY, f"paths.output_root={tmp_path / 'outputs'}", *overrides)


def phase_out(folder: Path, name: str) -> dict:
    return json.loads((folder / f"phase-{name}.json").read_text())["out"]["metrics"]


@pytest.mark.parametrize("round_init", ["previous", "scratch"])
def test_a_round_starts_from_the_previous_best_model_or_from_scratch(
    tiny_cfg, tmp_path, round_init
):
    cfg = toy(tiny_cfg, tmp_path, f"selector.round_init={round_init}")
    record = run(cfg, tmp_path / "job")
    assert record.status == "completed", record.error
    warm, round1 = record.selection["rounds"]
    # The round's first evaluation, before any step, is of the model it trains from.
    fresh = phase_out(Path(record.selection["warmup_folder"]), "warmup")
    same = (round1["start_val_acc"], round1["start_test_acc"]) == (
        warm["best_val_acc"],
        warm["test_acc_es"],
    )
    assert same == (round_init == "previous")
    if round_init == "scratch":
        # A new initialisation: not the warm-up's best model (it starts near chance).
        assert round1["start_val_acc"] < warm["best_val_acc"]
    # The warm-up itself always starts from scratch here: its start is a fresh model's.
    assert (fresh["start_val_acc"], fresh["start_test_acc"]) == (
        warm["start_val_acc"],
        warm["start_test_acc"],
    )


def test_a_previous_round_trains_with_fresh_weights_and_optimizer(tiny_cfg, tmp_path, monkeypatch):
    """The round's optimiser starts empty (no momentum carried over) at optimizer.lr, and its
    weight table is a new U[0, 1) draw over its own training set."""
    made, rules = [], []
    real_optimizer = loop.make_optimizer

    def recording_optimizer(ctx, sched):
        opt, schedule = real_optimizer(ctx, sched)
        made.append((sched.name, len(opt.state), opt.param_groups[0]["lr"]))
        return opt, schedule

    def recording_method(ctx, phase):
        from l2rw.methods import METHODS

        rule = METHODS.get(ctx.cfg.method.name)(ctx)
        rules.append((phase.name, rule.weights.clone()))
        return loop.train_loop(ctx, rule, phase)

    monkeypatch.setattr(loop, "make_optimizer", recording_optimizer)
    monkeypatch.setattr(selection, "train_method", recording_method)
    record = run(toy(tiny_cfg, tmp_path), tmp_path / "job")
    assert record.status == "completed", record.error
    assert made == [("warmup", 0, 0.1), ("round1", 0, 0.1)]
    (_, w_warm), (_, w_round) = rules
    sizes = record.data["sizes"]
    assert len(w_round) == sizes["train"] == len(w_warm) - 4
    assert float(w_round.min()) >= 0 and float(w_round.max()) < 1


def test_stage_a_runs_once_per_warmup_key_and_starts_the_warmup(tiny_cfg, tmp_path, monkeypatch):
    trained = []
    real_loop, real_method = selection.train_loop, selection.train_method

    def counting_loop(ctx, rule, phase=None):
        trained.append(phase.name)
        return real_loop(ctx, rule, phase)

    def counting_method(ctx, phase):
        trained.append(phase.name)
        return real_method(ctx, phase)

    monkeypatch.setattr(selection, "train_loop", counting_loop)
    monkeypatch.setattr(selection, "train_method", counting_method)
    plain = ("selector.warmup_init=plain",)
    first = run(toy(tiny_cfg, tmp_path, "selector=random", *plain), tmp_path / "a")
    second = run(toy(tiny_cfg, tmp_path, "selector=gbc", *plain), tmp_path / "b")
    assert first.status == second.status == "completed"
    assert trained == ["stage_a", "warmup", "round1", "round1"]
    folder = Path(first.selection["warmup_folder"])
    assert folder == Path(second.selection["warmup_folder"])
    (shared,) = (tmp_path / "outputs" / "cache").glob("stage-a-*/")
    stage_a = phase_out(shared, "stage_a")
    warm = first.selection["rounds"][0]
    # The warm-up starts from Stage A's best-validation model.
    assert (warm["start_val_acc"], warm["start_test_acc"]) == (
        stage_a["best_val_acc"],
        stage_a["test_acc_es"],
    )
    # Stage A's steps come first in the job's step count.
    assert first.selection["rounds"][1]["steps"] == 8
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 * 8
    # Scratch warm-ups are another cache entry: Stage A is not run for them.
    trained.clear()
    run(toy(tiny_cfg, tmp_path, "selector=random"), tmp_path / "c")
    assert trained == ["warmup", "round1"]
    # A warm-up with another meta lr is another warm-up, on the same Stage A.
    trained.clear()
    third = run(
        toy(tiny_cfg, tmp_path, "selector=random", "method.meta_lr=3", *plain), tmp_path / "d"
    )
    assert trained == ["warmup", "round1"]
    assert third.selection["rounds"][0]["start_val_acc"] == warm["start_val_acc"]
    assert Path(third.selection["warmup_folder"]) != folder


def test_warmup_key_changes_with_the_warmup_start_only(tiny_cfg, tmp_path):
    class Ctx:  # the key reads only the config
        def __init__(self, cfg):
            self.cfg = cfg

    def key(*overrides):
        return phase_cache.setting_key(
            phase_cache.warmup_setting(Ctx(toy(tiny_cfg, tmp_path, *overrides)))
        )

    assert key() == key("selector.round_init=scratch") == key("selector=gbc")
    assert key() != key("selector.warmup_init=plain")


class Interrupted(Exception):
    pass


def test_an_interrupted_chain_resumes_in_every_phase(tiny_cfg, tmp_path, monkeypatch, caplog):
    overrides = ("selector.warmup_init=plain", "selector.cache_warmup=false")
    capture_info(caplog)
    straight = run(toy(tiny_cfg, tmp_path, *overrides), tmp_path / "straight")
    assert phase_launches(caplog.text) == [
        ("stage_a", 0, 8, 8),
        ("warmup", 0, 8, 8),
        ("round1", 0, 8, 8),
    ]
    real_save = phase_store.save_checkpoint
    job = tmp_path / "resumed"
    launches = []
    for phase in ("stage_a", "warmup", "round1"):

        def die(folder, name, state, *identity, phase=phase):
            real_save(folder, name, state, *identity)
            if name == f"checkpoint-{phase}.pt" and state["step"] == 4:
                raise Interrupted

        monkeypatch.setattr(phase_store, "save_checkpoint", die)
        caplog.clear()
        with pytest.raises(Interrupted):
            run(toy(tiny_cfg, tmp_path, *overrides), job)
        launches.append(phase_launches(caplog.text))
    monkeypatch.setattr(phase_store, "save_checkpoint", real_save)
    caplog.clear()
    resumed = run(toy(tiny_cfg, tmp_path, *overrides), job)
    launches.append(phase_launches(caplog.text))
    # Each launch finishes the phase the previous one was killed in, from its step-4 checkpoint.
    assert launches == [
        [],
        [("stage_a", 4, 4, 8)],
        [("warmup", 4, 4, 8)],
        [("round1", 4, 4, 8)],
    ]
    assert resumed.status == "completed"
    assert resumed.metrics == straight.metrics
    assert resumed.selection["rounds"] == straight.selection["rounds"]
    assert (job / "metrics.jsonl").read_text() == (
        tmp_path / "straight" / "metrics.jsonl"
    ).read_text()


def test_permutation_noise_maps_each_class_by_one_random_permutation_with_fixed_points():
    labels = np.repeat(np.arange(10), 100)
    derangements = 0
    for seed in range(40):
        process = noise_process(
            "adversarial", 10, 0.6, np.random.default_rng(seed), mapping="permutation"
        )
        target = np.array(process.params["permutation"])
        assert sorted(target) == list(range(10))
        observed = process(labels, np.random.default_rng(1000 + seed))
        changed = observed != labels
        # A changed label is its class's image under the permutation; a fixed class never changes.
        assert np.array_equal(observed[changed], target[labels[changed]])
        fixed = target == np.arange(10)
        assert not changed[fixed[labels]].any()
        if not fixed.any():
            derangements += 1
            assert changed.sum() == 600  # exactly round(0.6 * 1000) picked, all moved
        else:
            assert changed.sum() < 600
    # About 1/e of random permutations have no fixed point (binomial test, two-sided).
    assert stats.binomtest(derangements, 40, 1 / np.e).pvalue > 0.001
    # Over many draws the fixed-point count is Poisson(1)-like: mean 1.
    counts = [
        int(
            (
                np.array(
                    noise_process(
                        "adversarial", 10, 0.6, np.random.default_rng(s), mapping="permutation"
                    ).params["permutation"]
                )
                == np.arange(10)
            ).sum()
        )
        for s in range(2000)
    ]
    assert abs(np.mean(counts) - 1.0) < 4 * np.sqrt(1.0 / 2000)
    # Two classes: the authors' swap, never the identity.
    for seed in range(5):
        process = noise_process(
            "adversarial", 2, 1.0, np.random.default_rng(seed), mapping="permutation"
        )
        assert process.params["permutation"] == [1, 0]


def test_an_unknown_mapping_says_which_exist():
    with pytest.raises(ConfigError, match="mapping=permutation"):
        noise_process("adversarial", 10, 0.6, np.random.default_rng(0), mapping="shuffle")


def test_standard_normalisation_uses_mnists_mean_and_std(tiny_cfg):
    cfg = tiny_cfg("dataset.normalize=standard")
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    expected = (x.double() / 255.0 - 0.1307) / 0.3081
    assert torch.allclose(Preprocess(cfg.dataset)(x).double(), expected, atol=1e-6)


def test_per_image_standardisation_is_tensorflows_on_the_stored_values(tiny_cfg):
    """tf.image.per_image_standardization (the SELFIE authors' input scaling), written out in
    numpy: each image's values minus their mean, over max(population std, 1 / sqrt(n)), on the
    0..255 values it is given (image 1: one pixel off a constant, where the floor decides); a
    constant image is all zeros."""
    cfg = tiny_cfg("dataset.normalize=per_image")
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    x[1] = 7
    x[1, 0, 0, 0] = 8
    x[2] = 7
    raw = x.numpy().astype(np.float64).reshape(3, -1)
    std = np.maximum(raw.std(axis=1), 1 / np.sqrt(raw.shape[1]))
    expected = ((raw - raw.mean(axis=1, keepdims=True)) / std[:, None]).reshape(x.shape)
    got = Preprocess(cfg.dataset)(x).double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(got[2] == 0)


def test_batch_scaled_meta_lr_is_meta_lr_times_the_batch(tiny_cfg, tmp_path):
    base = ("method=meta_reweight", "dataset.clean_size=20", "device=cpu")
    batch = tiny_cfg(*base).train.batch_size
    scaled = run(
        tiny_cfg(*base, "method.meta_lr=0.5", "method.meta_lr_scale=batch"), tmp_path / "a"
    )
    plain = run(tiny_cfg(*base, f"method.meta_lr={0.5 * batch}"), tmp_path / "b")
    assert scaled.status == plain.status == "completed"
    assert scaled.metrics == plain.metrics
    assert scaled.weights_hist == plain.weights_hist
    other = run(tiny_cfg(*base, "method.meta_lr=0.5"), tmp_path / "c")
    assert other.weights_hist != plain.weights_hist
    cfg = tiny_cfg(*base, "method.meta_lr=2", "method.meta_lr_scale=batch")
    assert meta_step_size(cfg.method, 64) == 128


def test_meta_lr_decays_at_its_milestones_within_each_phase(tiny_cfg, tmp_path, monkeypatch):
    """`method.meta_milestones` (the authors' meta-lr x 0.1 after epoch 120): the weights' step
    is meta_lr x meta_gamma^(milestones passed), counted from each phase's own first step."""
    steps = []
    real_step = reweighting.meta_reweight_step

    def spy(*args, **kwargs):
        steps.append(args[7])
        return real_step(*args, **kwargs)

    monkeypatch.setattr(reweighting, "meta_reweight_step", spy)
    cfg = toy(
        tiny_cfg,
        tmp_path,
        "train.unit=steps",
        "train.length=6",
        "method.meta_milestones=[2,4]",
        "method.meta_gamma=0.5",
        "selector.snapshot_every=2",
    )
    assert run(cfg, tmp_path / "job").status == "completed"
    # Stage A trains plainly; the warm-up and one round each take 6 weighted steps.
    assert steps == [10.0, 10.0, 5.0, 5.0, 2.5, 2.5] * 2


@pytest.mark.parametrize(
    "override, key",
    [
        ("selector.round_init=last", "selector.round_init"),
        ("selector.warmup_init=pretrained", "selector.warmup_init"),
        ("method.meta_lr_scale=per_example", "method.meta_lr_scale"),
        ("method.meta_milestones=[4,2]", "method.meta_milestones"),
        ("method.meta_gamma=0", "method.meta_gamma"),
    ],
)
def test_unknown_switch_values_fail_naming_the_key(tiny_cfg, tmp_path, override, key):
    cfg = toy(tiny_cfg, tmp_path, override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize("name", ["rbc_ablation_mnist", "rbc_meta_lr_mnist"])
def test_ablation_tables_compose_at_both_scales(data_dir, name):
    for scale in ("cpu", "full"):
        cfg = compose_cfg([f"+table={name}", f"scale={scale}", f"paths.data_dir={data_dir}"])
        validate(cfg)
        assert cfg.selector.round_init == "previous"


def _with_selector(record: dict, **selector) -> dict:
    record["config"]["selector"] = {"name": "rbc", **selector}
    return record


def _protocol_aggregate(tmp_path, records):
    from test_report_fakes import fig2_spec, write_record

    from l2rw.report.aggregate import aggregate
    from l2rw.report.frame import records_frame
    from l2rw.report.records import load_local

    for i, record in enumerate(records):
        write_record(tmp_path, record, name=f"run{i:02d}")
    spec = fig2_spec(protocol=(("selector.round_init", "previous"),))
    return aggregate(records_frame(load_local(tmp_path, spec.name), spec), spec)


def test_a_report_never_mixes_protocols_and_reads_a_missing_key_as_the_earlier_value(tmp_path):
    from test_report_fakes import make_record

    old = [_with_selector(make_record(seed=s, acc=0.5)) for s in (0, 1)]  # before the key
    new = [_with_selector(make_record(seed=s, acc=0.9), round_init="previous") for s in (0, 1)]
    # Both protocols: only the table config's is counted; the earlier runs are listed.
    agg = _protocol_aggregate(tmp_path / "both", [*old, *new])
    row = agg.cells[agg.cells["method"] == "l2rw"].iloc[0]
    assert row["mean"] == pytest.approx(10.0) and row["n"] == 2
    (other,) = [p.text for p in agg.problems if p.kind == "other_protocol"]
    assert "2 run(s) made under another protocol (selector.round_init=scratch)" in other
    assert "earlier_protocol" not in [p.kind for p in agg.problems]
    # Only the earlier protocol: it is reported, and said to be the earlier one.
    agg = _protocol_aggregate(tmp_path / "old", old)
    row = agg.cells[agg.cells["method"] == "l2rw"].iloc[0]
    assert row["mean"] == pytest.approx(50.0) and row["n"] == 2
    (earlier,) = [p.text for p in agg.problems if p.kind == "earlier_protocol"]
    assert "selector.round_init=scratch (now previous)" in earlier


def test_the_rbc_tables_protocol_leaves_out_what_they_vary():
    from l2rw.report.spec import load_spec

    protocol = dict(load_spec("rbc_table1_mnist", ["scale=cpu"]).protocol)
    assert protocol["selector.round_init"] == "previous"
    assert protocol["noise.mapping"] == "next"
    ablation = dict(load_spec("rbc_ablation_mnist", ["scale=cpu"]).protocol)
    assert "selector.round_init" not in ablation and "dataset.normalize" not in ablation
    assert "method.meta_lr" not in dict(load_spec("rbc_meta_lr_mnist", ["scale=cpu"]).protocol)
    # L2RW tables have no selector, so no round start to compare.
    assert "selector.round_init" not in dict(load_spec("l2rw_fig2", ["scale=cpu"]).protocol)


def test_meta_batches_with_replacement_are_a_pure_function_of_seed_and_step():
    from l2rw.data.batches import ReplacementStream

    stream = ReplacementStream(20, 50, seed=3, stream=7)
    first = stream(5)
    assert len(first) == 50 and int(first.max()) < 20  # more draws than items: repeats
    assert torch.equal(first, ReplacementStream(20, 50, seed=3, stream=7)(5))
    assert not torch.equal(first, stream(6))
    # Every item is drawn about equally often over many steps (chi-square, uniform).
    counts = np.bincount(torch.cat([stream(s) for s in range(400)]).numpy(), minlength=20)
    assert stats.chisquare(counts).pvalue > 0.001


def test_rectified_gaussian_weights_have_mean_one_and_a_zero_mass(tiny_cfg, tmp_path):
    from l2rw.methods.reweighting import WEIGHT_INITS

    gen = torch.Generator().manual_seed(0)
    w = WEIGHT_INITS["rectified_gaussian"](100_000, gen, torch.device("cpu"))
    assert float(w.mean()) == pytest.approx(1.0)
    assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.01)  # relu of N(0, 1)
    base = ("method=meta_reweight", "dataset.clean_size=20", "device=cpu")
    for override in ("method.init=rectified_gaussian", "train.meta_sampling=replacement"):
        record = run(tiny_cfg(*base, override), tmp_path / override)
        assert record.status == "completed", record.error


def test_every_tables_report_spec_composes_with_its_protocol():
    from l2rw.report.spec import PROTOCOL_KEYS, load_spec, table_names

    for table in table_names():
        spec = load_spec(table, [])
        keys = [key for key, _ in spec.protocol]
        assert set(keys) <= set(PROTOCOL_KEYS), table
        assert not set(keys) & set(spec.keys), table  # what a table varies is not its protocol


def test_an_ablations_switches_are_expected_one_at_a_time_not_in_every_combination():
    from l2rw.report.spec import load_spec

    spec = load_spec("rbc_ablation_mnist", ["scale=cpu"])
    cells = spec.expected_cells()
    assert len(cells) == 4 * 8  # rows x the eight rbc_switch options
    reference = ("previous", "scratch", "next", "unit", "epochs", "uniform", 20)
    assert ("rbc", *reference) in cells
    assert ("rbc", "previous", "plain", "next", "unit", "epochs", "uniform", 20) in cells
    assert ("rbc", "previous", "scratch", "next", "unit", "epochs", "uniform", 40) in cells
    assert ("rbc", "scratch", "plain", "next", "unit", "epochs", "uniform", 20) not in cells
