"""The stages of a method's job on tiny Fashion-MNIST-format data: +ES reports the model of best
hyper-validation accuracy, +FT starts from the model the training stage reports and records
both accuracies, a job interrupted in its fine-tuning does not train again, CLEAN ONLY trains on
the clean pool, and S-Model +CONF finds its baseline or trains one."""

import json

import pytest
import torch

import l2rw.methods.loop as loop
import l2rw.methods.noisy_labels as noisy_labels
import l2rw.methods.stages as stages
from l2rw.errors import ConfigError
from l2rw.methods.checkpoint import load_snapshot
from l2rw.train import run

FMNIST = (
    "dataset=fashion_mnist",
    "model=lenet5",
    "protocol=l2rw_background",
    "noise.background_class=3",
    "noise.rate=0.4",
    "dataset.clean_per_class=4",
    "dataset.hyper_val_size=40",
    "device=cpu",
)
FT = ("finetune=clean", "finetune.steps=6", "finetune.eval_every=3")


@pytest.fixture
def cfg(tiny_cfg, tmp_path):
    def make(*overrides):
        return tiny_cfg(*FMNIST, f"paths.output_root={tmp_path / 'outputs'}", *overrides)

    return make


# Hyper-validation and test accuracies the evaluations report in turn (scripted below): the best
# validation accuracy is the second evaluation's, and no two are equal.
SCRIPTED_VAL = [0.5, 0.8, 0.6, 0.7]
SCRIPTED_TEST = [0.31, 0.42, 0.53, 0.64]


@pytest.fixture
def scripted_evaluations(monkeypatch):
    """Each evaluation reports the next of SCRIPTED_VAL / SCRIPTED_TEST as its accuracies."""
    real, calls = loop._evaluate, []

    def scripted(ctx, preprocess):
        out = real(ctx, preprocess)
        i = len(calls) % len(SCRIPTED_VAL)
        calls.append(i)
        out["val"]["acc"], out["test"]["acc"] = SCRIPTED_VAL[i], SCRIPTED_TEST[i]
        return out

    monkeypatch.setattr(loop, "_evaluate", scripted)
    return calls


@pytest.mark.parametrize("stop", ["early", "final"])
def test_early_stop_reports_the_best_hyper_validation_model(
    cfg, tmp_path, scripted_evaluations, stop
):
    # 16 steps evaluated every 4: the evaluations at steps 4, 8, 12, 16; the best is step 8's.
    record = run(cfg(f"stop={stop}", "train.length=16"), tmp_path / "job")
    m = record.metrics
    assert record.status == "completed"
    assert len(scripted_evaluations) == 4
    rows = [json.loads(line) for line in (tmp_path / "job" / "metrics.jsonl").open()]
    assert [(r["step"], r["val/acc"], r["test/acc"]) for r in rows] == list(
        zip([4, 8, 12, 16], SCRIPTED_VAL, SCRIPTED_TEST, strict=True)
    )
    assert (m["best_step"], m["best_val_acc"], m["test_acc_es"]) == (8, 0.8, 0.42)
    assert m["test_acc_final"] == 0.64
    assert m["test_acc"] == (0.42 if stop == "early" else 0.64)


@pytest.mark.parametrize("stop,start", [("final", "final"), ("early", "best")])
def test_finetune_starts_from_the_reported_model_and_records_both(
    cfg, tmp_path, monkeypatch, stop, start
):
    seen = {}
    real = stages.finetune

    def spy(ctx, model, clean, phase):
        seen["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        seen["clean"] = len(clean)
        return real(ctx, model, clean, phase)

    monkeypatch.setattr(stages, "finetune", spy)
    record = run(cfg(f"stop={stop}", *FT), tmp_path / "job")
    m = record.metrics
    snapshot = load_snapshot(tmp_path / "job" / "snapshots-train", start, torch.device("cpu"))
    assert all(torch.equal(seen["state"][k], snapshot[k]) for k in snapshot)
    assert seen["clean"] == 40  # 4 clean images per class
    assert m["finetune_from"] == start and m["finetune_steps"] == 6
    reported = m["test_acc_es"] if stop == "early" else m["test_acc_final"]
    assert m["test_acc_before_ft"] == reported
    # The stage's learning rate is the training stage's last one (no milestones: optimizer.lr).
    assert m["finetune_lr"] == pytest.approx(0.05)


def test_finetune_at_a_vanishing_rate_keeps_the_accuracy(cfg, tmp_path):
    m = run(cfg(*FT, "finetune.lr=1e-12"), tmp_path / "job").metrics
    assert m["test_acc"] == m["test_acc_before_ft"]


def test_finetune_lr_defaults_to_the_decayed_rate(cfg, tmp_path):
    overrides = (*FT, "schedule.milestones=[4,8]", "schedule.gamma=0.5")
    m = run(cfg(*overrides), tmp_path / "job").metrics
    assert m["finetune_lr"] == pytest.approx(0.05 * 0.25)


def test_job_interrupted_in_finetuning_does_not_train_again(cfg, tmp_path, monkeypatch):
    overrides = FT
    straight = run(cfg(*overrides), tmp_path / "straight")
    (tmp_path / "straight" / "result.json").unlink()
    (tmp_path / "straight" / "phase-finetune.json").unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("the finished training stage ran again")

    monkeypatch.setattr(stages, "train_loop", no_training)
    resumed = run(cfg(*overrides), tmp_path / "straight")
    assert resumed.status == "completed"
    for key in ("test_acc", "test_acc_before_ft", "best_val_acc"):
        assert resumed.metrics[key] == straight.metrics[key]


def test_clean_only_trains_on_the_clean_pool(cfg, tmp_path, monkeypatch):
    seen = {}
    real = stages.train_loop

    def spy(ctx, rule, phase):
        seen["train"], seen["total"] = len(ctx.data.train), phase.total
        return real(ctx, rule, phase)

    monkeypatch.setattr(stages, "train_loop", spy)
    record = run(cfg("method=clean_only", "method.length=5"), tmp_path / "job")
    assert record.status == "completed"
    assert seen == {"train": 40, "total": 5}


def test_s_model_conf_uses_the_sibling_baseline_else_trains_one(cfg, tmp_path, monkeypatch):
    found = []
    real = noisy_labels._sibling_baseline
    monkeypatch.setattr(
        noisy_labels, "_sibling_baseline", lambda ctx: found.append(real(ctx)) or found[-1]
    )
    sweep = tmp_path / "sweep"
    alone = run(cfg("method=s_model_conf"), sweep / "conf_alone")
    assert alone.status == "completed"
    assert (sweep / "conf_alone" / "pretrain" / "phase-pretrain.json").exists()
    run(cfg("method=baseline"), sweep / "baseline")
    other_seed = run(cfg("method=baseline", "seed=1"), sweep / "baseline_seed1")
    assert other_seed.status == "completed"
    paired = run(cfg("method=s_model_conf"), sweep / "conf_paired")
    assert paired.status == "completed"
    assert not (sweep / "conf_paired" / "pretrain").exists()
    assert found[0] is None
    assert found[-1].output_dir == str(sweep / "baseline") and found[-1].seed == 0


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (("stop=early", "dataset.hyper_val_size=0"), "hyper_val_size"),
        (("finetune=clean", "dataset.clean_per_class=null"), "clean"),
        (("method=s_model", "method.smoothing=0"), "smoothing"),
        (("method=reed_soft", "method.beta=1.5"), "beta"),
        (("method=clean_only", "dataset.clean_per_class=null"), "clean"),
        (("stop=early", "selector=rbc", "method=meta_reweight"), "stop=early"),
    ],
)
def test_bad_stage_settings_fail_in_one_paragraph(cfg, tmp_path, overrides, needle):
    record = run(cfg(*overrides), tmp_path / "job")
    assert record.status == "failed"
    assert needle in record.error and "\n" not in record.error


def test_finetune_stage_does_not_follow_a_selection_pipeline(cfg):
    from l2rw.methods.stages import FinetuneConf

    with pytest.raises(ConfigError, match="finetune=clean follows"):
        FinetuneConf.check(cfg(*FT, "selector=rbc", "method=meta_reweight"))
