"""The optimizer and schedule groups: each option builds torch's own optimizer / scheduler with the
config's values, the schedules' factors against torch's arithmetic, and a run with each."""

import dataclasses
import inspect
import math

import pytest
import torch
from conftest import compose_cfg

from l2rw.methods.optimizers import (
    OPTIMIZERS,
    SCHEDULES,
    PhaseSchedule,
    build_optimizer,
    phase_schedule,
)
from l2rw.train import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TORCH = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def test_every_optimizer_option_is_registered_with_keyword_arguments_of_torchs_class():
    assert OPTIMIZERS.names() == sorted(TORCH)
    for name in OPTIMIZERS.names():
        fields = {f.name for f in dataclasses.fields(OPTIMIZERS.schema(name))} - {"name"}
        takes = set(inspect.signature(TORCH[name]).parameters) - {"params"}
        assert fields <= takes, (name, fields - takes)
    assert SCHEDULES.names() == ["constant", "cosine", "multistep"]


@pytest.mark.parametrize("name", sorted(TORCH))
def test_each_option_builds_torchs_optimizer_with_the_configs_values(name):
    cfg = compose_cfg([f"optimizer={name}", "optimizer.lr=0.03", "optimizer.weight_decay=0.001"])
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = build_optimizer(cfg, params)
    assert type(optimizer) is TORCH[name]
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.03 and group["weight_decay"] == 0.001
    for key, value in cfg.optimizer.items():
        if key not in ("name", "lr", "weight_decay"):
            expected = tuple(value) if key == "betas" else value
            assert group[key] == expected, key
    assert build_optimizer(cfg, params, lr=0.5).param_groups[0]["lr"] == 0.5


def test_the_default_is_the_earlier_sgd():
    cfg = compose_cfg([])
    assert cfg.optimizer.name == "sgd" and cfg.schedule.name == "multistep"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (1e-3, 0.9, 0)
    assert list(cfg.schedule.milestones) == [] and cfg.schedule.gamma == 0.1


def test_multistep_is_torchs_multisteplr_and_its_factor_the_rate_it_reaches():
    schedule = PhaseSchedule("multistep", milestones=[3, 6], gamma=0.5, total=10)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    scheduler = schedule.scheduler(optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR)
    for step in range(10):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * schedule.factor(step))
        optimizer.step()
        scheduler.step()


def test_cosine_warms_up_linearly_then_falls_to_its_floor():
    cfg = compose_cfg(["schedule=cosine", "schedule.warmup=2", "schedule.min_factor=0.1"])
    schedule = phase_schedule(cfg, total=50, unit=5)  # warm-up 2 units of 5 steps
    assert schedule.warmup == 10
    assert [schedule.factor(s) for s in range(3)] == [0.1, 0.2, 0.3]
    assert schedule.factor(10) == 1.0
    assert schedule.factor(30) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert schedule.factor(50) == pytest.approx(0.1)
    falling = [schedule.factor(s) for s in range(10, 51)]
    assert falling == sorted(falling, reverse=True)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    scheduler = schedule.scheduler(optimizer)
    for step in range(50):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.4 * schedule.factor(step))
        optimizer.step()
        scheduler.step()


def test_a_bad_schedule_or_rate_is_one_paragraph(tiny_cfg, tmp_path):
    for overrides, needle in (
        (["schedule.milestones=[8,4]"], "increasing"),
        (["optimizer=adam", "optimizer.lr=-1"], "optimizer.lr=-1.0 must be positive"),
        (["schedule=cosine", "schedule.min_factor=2"], "min_factor"),
    ):
        record = run(tiny_cfg(*overrides), tmp_path / needle)
        assert record.status == "failed" and needle in record.error


def test_a_run_trains_with_adamw_and_a_cosine_schedule_and_records_both(tiny_cfg, tmp_path):
    record = run(
        tiny_cfg(
            "optimizer=adamw",
            "optimizer.lr=0.003",
            "schedule=cosine",
            "schedule.warmup=2",
            "method=l2rw",
            "method.lookahead=optimizer",
            "dataset.clean_size=20",
        ),
        tmp_path,
    )
    assert record.status == "completed"
    assert record.config["optimizer"]["name"] == "adamw"
    assert record.config["schedule"] == {"name": "cosine", "warmup": 2, "min_factor": 0.0}
