"""The selection pipeline (Wu et al. 2023, Algorithm 2) end to end on the 2-D toy data: every
selector runs a whole round, the warm-up is cached and reused, an interrupted job resumes to the
same result, and the record says what was selected."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from launches import capture_info, phase_launches

import l2rw.methods.loop as loop
import l2rw.methods.phase_store as phase_store
import l2rw.methods.selection as selection
from l2rw.data.splits import build_data
from l2rw.methods.phase_store import PhaseStore
from l2rw.selection.selectors import SELECTORS
from l2rw.train import run

REPO = Path(__file__).resolve().parent.parent
TOY = (
    "dataset=toy2d",
    "model=mlp",
    "protocol=rbc",
    "method=meta_reweight",
    "noise=uniform_flip",
    "noise.rate=0.6",
    "train.batch_size=32",
    "train.length=6",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "optimizer.lr=0.1",
    "selector.snapshot_every=1",
    "device=cpu",
)


def toy(tiny_cfg, tmp_path, *overrides):
    return tiny_cfg(*TOY, f"paths.output_root={tmp_path / 'outputs'}", *overrides)


@pytest.mark.parametrize(
    "selector",
    [
        "random",
        "certain",
        "uncertain",
        "kmeans",
        "rbc",
        "gbc",
        "gbc selector.proj_dims=[0,0]",
        "gbc selector.batch_size=7",
        "ta_vaal selector.epochs=2",
        "craig",
    ],
)
def test_each_selector_runs_a_whole_round(tiny_cfg, tmp_path, selector):
    cfg = toy(tiny_cfg, tmp_path, *f"selector={selector}".split())
    record = run(cfg, tmp_path / "job")
    assert record.status == "completed", record.error
    sel = record.selection
    assert len(sel["meta_indices"]) == len(set(sel["meta_indices"])) == 6
    assert set(sel["warmup_indices"]) < set(sel["meta_indices"])
    assert [r["round"] for r in sel["rounds"]] == [0, 1]
    assert len(sel["rounds"][1]["selected"]) == 4
    assert 0 <= sel["noisy_selected_before_cleaning"] <= 4
    assert record.data["sizes"]["clean"] == 6
    assert record.data["sizes"]["train"] == 594
    assert record.metrics["test_acc"] == record.metrics["test_acc_es"]
    assert record.metrics["test_acc"] == sel["rounds"][1]["test_acc_es"]
    assert (tmp_path / "job" / "toy_boundary.npz").exists()
    assert 0 <= record.metrics["weights_auc"] <= 1
    assert 0 <= record.metrics["weights_auc_boundary"] <= 1


def test_warmup_selector_is_the_warmup_alone(tiny_cfg, tmp_path):
    record = run(toy(tiny_cfg, tmp_path, "selector=warmup"), tmp_path / "job")
    assert record.status == "completed", record.error
    assert [r["round"] for r in record.selection["rounds"]] == [0]
    assert record.data["sizes"]["clean"] == 2


def test_finetune_trains_the_warmup_model_on_the_meta_set(tiny_cfg, tmp_path):
    record = run(toy(tiny_cfg, tmp_path, "selector=finetune"), tmp_path / "job")
    assert record.status == "completed", record.error
    # 6 meta examples in batches of at most 32: one step an epoch, 10 epochs.
    assert record.selection["rounds"][1]["steps"] == 10


def test_finetune_runs_at_its_own_learning_rate(tiny_cfg, tmp_path):
    cfg = toy(tiny_cfg, tmp_path, "selector=finetune", "selector.finetune_lr=0.003")
    record = run(cfg, tmp_path / "job")
    warmup_steps = record.selection["rounds"][0]["steps"]
    rows = [json.loads(line) for line in (tmp_path / "job" / "metrics.jsonl").open()]
    assert {r["lr"] for r in rows if r["step"] <= warmup_steps} == {0.1}
    assert {r["lr"] for r in rows if r["step"] > warmup_steps} == {0.003}


def test_l2rw_as_the_reweighting_algorithm(tiny_cfg, tmp_path):
    record = run(toy(tiny_cfg, tmp_path, "selector=rbc", "method=l2rw"), tmp_path / "job")
    assert record.status == "completed", record.error


def test_cleaned_examples_leave_training_with_their_true_labels(tiny_cfg):
    data = build_data(tiny_cfg(*TOY, "selector=random"))
    moved = data.move_to_meta(torch.tensor([0, 5, 7]))
    assert len(moved.train) == len(data.train) - 3
    assert len(moved.clean) == len(data.clean) + 3
    assert torch.equal(moved.clean.y[-3:], data.train.y_true[[0, 5, 7]])
    assert set(moved.clean.index[-3:]) == set(data.train.index[[0, 5, 7]])
    assert not set(moved.train.index) & set(moved.clean.index)


def test_warmup_is_cached_and_reused_across_selectors(tiny_cfg, tmp_path, monkeypatch):
    trained = []
    real = selection.train_method

    def counting(ctx, phase=None):
        trained.append(phase.name)
        return real(ctx, phase)

    monkeypatch.setattr(selection, "train_method", counting)
    first = run(toy(tiny_cfg, tmp_path, "selector=random"), tmp_path / "a")
    second = run(toy(tiny_cfg, tmp_path, "selector=rbc"), tmp_path / "b")
    assert trained == ["warmup", "round1", "round1"]
    assert first.selection["warmup_folder"] == second.selection["warmup_folder"]
    assert first.selection["rounds"][0] == second.selection["rounds"][0]
    # Another seed is another warm-up.
    run(toy(tiny_cfg, tmp_path, "selector=rbc", "seed=1"), tmp_path / "c")
    assert trained.count("warmup") == 2


def test_a_job_needing_a_warmup_being_computed_waits_for_it(tiny_cfg, tmp_path, monkeypatch):
    """Job A computes the shared warm-up; job B (a real process, another selector) starts
    meanwhile, waits on the warm-up's lock until A is done, then reuses A's warm-up."""
    from conftest import TINY

    cmd = [sys.executable, "-m", "l2rw.train", *TINY, *TOY, "selector=rbc", "threads=1"]
    cmd += [f"paths.output_root={tmp_path / 'outputs'}", f"hydra.run.dir={tmp_path / 'b'}"]
    b_log, started = tmp_path / "b" / "train.log", {}
    real = selection._warmup_phases

    def start_b_then_warm_up(ctx, folder):
        # A holds the warm-up's lock here. B runs until it needs the warm-up (its data are
        # built, it logged them); A gives it 3 more seconds before computing the warm-up.
        env = {**os.environ, "WANDB_MODE": "disabled"}
        started["b"] = b = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while b.poll() is None and time.monotonic() < deadline:
            if b_log.exists() and "Data:" in b_log.read_text():
                break
            time.sleep(0.05)
        time.sleep(3)
        assert b.poll() is None, "B ended while A held the warm-up's lock"
        return real(ctx, folder)

    monkeypatch.setattr(selection, "_warmup_phases", start_b_then_warm_up)
    a = run(toy(tiny_cfg, tmp_path, "selector=random"), tmp_path / "a")
    assert a.status == "completed", a.error
    assert started["b"].wait(timeout=300) == 0
    b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert b["status"] == "completed"
    log = b_log.read_text()
    # B trained round 1 only: the warm-up was A's, found finished once B had the lock.
    assert "Phase warmup finished before" in log
    assert [name for name, *_ in phase_launches(log)] == ["round1"]
    assert b["selection"]["warmup_folder"] == a.selection["warmup_folder"]
    assert b["selection"]["rounds"][0] == a.selection["rounds"][0]


class Interrupted(Exception):
    pass


def test_interrupted_selection_job_resumes_to_the_same_result(
    tiny_cfg, tmp_path, monkeypatch, caplog
):
    overrides = ("selector=rbc", "selector.cache_warmup=false", "train.length=8")
    capture_info(caplog)
    straight = run(toy(tiny_cfg, tmp_path, *overrides), tmp_path / "straight")
    assert phase_launches(caplog.text) == [("warmup", 0, 8, 8), ("round1", 0, 8, 8)]
    real_save = phase_store.save_checkpoint

    def die_in_round1(folder, name, state, *identity):
        real_save(folder, name, state, *identity)
        if name == "checkpoint-round1.pt":
            raise Interrupted

    monkeypatch.setattr(phase_store, "save_checkpoint", die_in_round1)
    with pytest.raises(Interrupted):
        run(toy(tiny_cfg, tmp_path, *overrides), tmp_path / "resumed")
    assert (tmp_path / "resumed" / "round-1.json").exists()
    assert (tmp_path / "resumed" / "checkpoint-round1.pt").exists()
    monkeypatch.setattr(phase_store, "save_checkpoint", real_save)
    caplog.clear()
    resumed = run(toy(tiny_cfg, tmp_path, *overrides), tmp_path / "resumed")
    assert resumed.status == "completed"
    # The finished warm-up is not trained again; round 1 goes on from its checkpoint of step 2.
    assert "Phase warmup finished before" in caplog.text
    assert "Resumed phase round1 from its checkpoint at step 2 of 8." in caplog.text
    assert phase_launches(caplog.text) == [("round1", 2, 6, 8)]
    assert resumed.metrics == straight.metrics
    assert resumed.selection["meta_indices"] == straight.selection["meta_indices"]
    assert resumed.weights_hist == straight.weights_hist
    log = (tmp_path / "resumed" / "metrics.jsonl").read_text()
    assert log == (tmp_path / "straight" / "metrics.jsonl").read_text()


def test_meta_reweight_weight_table_survives_an_interruption(
    tiny_cfg, tmp_path, monkeypatch, caplog
):
    overrides = ("method=meta_reweight", "dataset.clean_size=20", "device=cpu")
    straight = run(tiny_cfg(*overrides), tmp_path / "straight")
    real_save = phase_store.save_checkpoint
    saved = {}

    def die_after_first(folder, name, state, *identity):
        real_save(folder, name, state, *identity)
        saved["weights"] = state["rule"]["weights"].clone()
        raise Interrupted

    monkeypatch.setattr(phase_store, "save_checkpoint", die_after_first)
    with pytest.raises(Interrupted):
        run(tiny_cfg(*overrides), tmp_path / "resumed")
    monkeypatch.setattr(phase_store, "save_checkpoint", real_save)
    # The weights moved from their U[0, 1) start and stay in [0, 1].
    assert float(saved["weights"].min()) >= 0 and float(saved["weights"].max()) <= 1
    capture_info(caplog)
    resumed = run(tiny_cfg(*overrides), tmp_path / "resumed")
    # Resumed from the checkpoint of step 4 (with its weight table): 8 more steps, not 12.
    assert "Resumed phase train from its checkpoint at step 4 of 12." in caplog.text
    assert phase_launches(caplog.text) == [("train", 4, 8, 12)]
    assert resumed.metrics == straight.metrics
    assert resumed.weights_hist == straight.weights_hist


def test_selectors_registered():
    assert SELECTORS.names() == [
        "certain",
        "craig",
        "finetune",
        "gbc",
        "kmeans",
        "none",
        "random",
        "rbc",
        "ta_vaal",
        "uncertain",
        "warmup",
    ]


def test_selection_needs_a_meta_reweighting_method(tiny_cfg, tmp_path):
    record = run(toy(tiny_cfg, tmp_path, "selector=rbc", "method=baseline"), tmp_path / "job")
    assert record.status == "failed" and "method=meta_reweight" in record.error


def test_record_lists_selected_examples_by_source_index(tiny_cfg, tmp_path):
    record = run(toy(tiny_cfg, tmp_path, "selector=random"), tmp_path / "job")
    chosen = record.selection["rounds"][1]["selected"]
    saved = json.loads((tmp_path / "job" / "round-1.json").read_text())["selected"]
    assert chosen == saved
    assert np.isin(chosen, record.selection["meta_indices"]).all()


@pytest.mark.parametrize("selector", ["rbc", "certain"])
def test_without_pretraining_the_whole_budget_is_selected_in_one_round(
    tiny_cfg, tmp_path, selector
):
    record = run(
        toy(tiny_cfg, tmp_path, f"selector={selector}", "+pretraining=without"), tmp_path / "job"
    )
    assert record.status == "completed", record.error
    sel = record.selection
    assert sel["warmup_indices"] == []
    assert [r["round"] for r in sel["rounds"]] == [0, 1]
    assert len(sel["rounds"][1]["selected"]) == len(sel["meta_indices"]) == 6
    assert record.data["sizes"]["clean"] == 6


def test_pretraining_without_meta_samples_is_refused_with_a_fix(tiny_cfg, tmp_path):
    record = run(toy(tiny_cfg, tmp_path, "selector=rbc", "selector.pretrain=false"), tmp_path)
    assert record.status == "failed"
    assert "+pretraining=without" in record.error


@pytest.mark.parametrize("selector", ["rbc", "kmeans", "craig"])
def test_features_for_the_tsne_figure_carry_each_rows_true_class(tiny_cfg, tmp_path, selector):
    cfg = toy(tiny_cfg, tmp_path, f"selector={selector}")
    record = run(cfg, tmp_path / "job")
    saved = np.load(tmp_path / "job" / "features.npz")
    picked = record.selection["rounds"][1]["selected"]
    data = build_data(cfg)
    true_class = dict(zip(data.train.index.tolist(), data.train.y_true.tolist(), strict=True))
    # The picked rows come first, in pick order.
    assert saved["labels"][: len(picked)].tolist() == [true_class[i] for i in picked]
    assert set(saved["labels"].tolist()) == {0, 1}


def test_rounds_of_per_round_picks_record_the_meta_samples_after_each(tiny_cfg, tmp_path):
    from l2rw.report.spec import round_meta_samples

    # Warm-up 2, budget 6, 3 a round: the last round takes the 1 left.
    cfg = toy(tiny_cfg, tmp_path, "selector=random", "selector.per_round=3")
    record = run(cfg, tmp_path / "job")
    assert record.status == "completed", record.error
    rounds = record.selection["rounds"]
    assert [r["meta_samples"] for r in rounds] == [2, 5, 6] == round_meta_samples(cfg)
    assert [len(r["selected"]) for r in rounds] == [0, 3, 1]
    assert record.metrics["test_acc"] == rounds[-1]["test_acc_es"]


def test_selection_steps_spread_k_minus_1_evenly_after_the_best():
    kept = list(range(10, 210, 10))  # 20 snapshots, steps 10 ... 200
    # t* at 50: 15 kept after it; K = 6 reads t* and 5 of them, first and last included.
    assert selection.selection_steps(kept, 50, 6) == [60, 100, 130, 170, 200]
    # No more than K - 1 after t*: all of them (a short window reads fewer than K).
    assert selection.selection_steps(kept, 170, 6) == [180, 190, 200]
    assert selection.selection_steps(kept, 50, 2) == [60]
    assert selection.selection_steps(kept, 50, 1) == []
    assert selection.selection_steps([], -1, 6) == []


def test_snapshot_interval_counts_epochs_or_steps():
    assert loop.snapshot_interval(20, "epochs", 15) == 300
    assert loop.snapshot_interval(3, "steps", 15) == 3


@pytest.mark.parametrize("selector", ["rbc", "finetune"])
def test_snapshots_every_few_steps_keep_only_the_window_after_the_best(
    tiny_cfg, tmp_path, selector
):
    # A snapshot every 5 steps, K = 4, over 40 steps evaluated every 4.
    cfg = toy(
        tiny_cfg,
        tmp_path,
        "train.length=40",
        "train.eval_every=4",
        f"selector={selector}",
        "selector.cache_warmup=false",
        "selector.snapshot_every=5",
        "selector.snapshot_unit=steps",
        "selector.snapshots=4",
    )
    record = run(cfg, tmp_path / "job")
    assert record.status == "completed", record.error
    warmup, round1 = record.selection["rounds"]
    best = warmup["best_step"]
    kept = PhaseStore(tmp_path / "job", "warmup").snapshot_steps()
    # Everything kept at or before t* was deleted when t* was found; every 5th step after it
    # is there, and the round read t* and 3 of them, evenly spaced over the window.
    assert kept == [s for s in range(5, warmup["steps"] + 1, 5) if s > best]
    assert len(kept) >= 3
    assert round1["snapshot_steps"] == [best, *selection.selection_steps(kept, best, 4)]
    assert round1["snapshot_steps"][-1] == kept[-1]
    # The last round keeps its best and final models only: no selection reads its snapshots.
    round1_store = PhaseStore(tmp_path / "job", "round1")
    assert not round1_store.snapshot_steps()
    assert (round1_store.snapshots / "best.pt").exists()
