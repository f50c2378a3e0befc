"""Learning-rate schedules over optimizer steps (iterations), with an optional linear warmup.

Every parameter group gets lr = base_lr * group["lr_mult"] * factor(t), where t counts the
optimizer steps done so far (the step about to be taken uses factor(t)):

- step (the paper: lr for the first 2/3 of the iterations, lr/10 after):
  factor(t) = gamma ** (number of milestones m with t >= round(m * max_iters))
- poly (DeepLab): factor(t) = (1 - r) * (1 - t / max_iters) ** power + r with r = min_lr / base_lr,
  so the lr falls from base_lr to min_lr (scaled by each group's lr_mult)
- warmup (either schedule): for t < warmup_iters the factor is multiplied by
  warmup_factor + (1 - warmup_factor) * t / warmup_iters (a linear ramp from warmup_factor to 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

SCHEDULES = ("step", "poly")


class LRSchedule:
    """Sets each group's lr from the iteration; state is the iteration alone, so a resume restores it."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule_cfg: Any, base_lr: float, max_iters: int):
        from segdcn.config import ConfigError, ScheduleConfig

        cfg = ScheduleConfig.from_config(schedule_cfg)  # a ScheduleConfig, DictConfig or dict; checked
        self.optimizer = optimizer
        self.name = cfg.name
        if max_iters < 1:
            raise ConfigError(f"trainer.max_iters={max_iters}: expected a positive number of iterations")
        if base_lr <= 0:
            raise ConfigError(f"optim.lr={base_lr}: expected a positive learning rate")
        self.base_lr = float(base_lr)
        self.max_iters = int(max_iters)
        self.warmup_iters = cfg.warmup_iters
        self.warmup_factor = cfg.warmup_factor
        self.milestone_iters = sorted(round(m * self.max_iters) for m in cfg.milestones)
        self.gamma = cfg.gamma
        self.power = cfg.power
        self.min_ratio = cfg.min_lr / self.base_lr
        if self.min_ratio > 1:
            raise ConfigError(f"schedule.min_lr={cfg.min_lr}: expected at most optim.lr ({self.base_lr})")
        for index, group in enumerate(optimizer.param_groups):
            group.setdefault("lr_mult", 1.0)
            group.setdefault("name", f"group{index}")
        self.iteration = 0
        self.apply()

    def factor(self, t: int) -> float:
        """The lr factor at iteration t (before warmup's ramp is applied, then with it)."""
        if self.name == "step":
            value = self.gamma ** sum(t >= m for m in self.milestone_iters)
        else:
            progress = min(t, self.max_iters) / self.max_iters
            value = (1 - self.min_ratio) * (1 - progress) ** self.power + self.min_ratio
        if t < self.warmup_iters:
            value *= self.warmup_factor + (1 - self.warmup_factor) * t / self.warmup_iters
        return value

    def lr_at(self, t: int, lr_mult: float = 1.0) -> float:
        return self.base_lr * lr_mult * self.factor(t)

    def apply(self) -> None:
        factor = self.factor(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * group["lr_mult"] * factor

    def step(self) -> None:
        """After an optimizer step: the next iteration's lr."""
        self.iteration += 1
        self.apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "iteration": self.iteration, "base_lr": self.base_lr, "max_iters": self.max_iters}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.apply()


def build_schedule(optimizer: torch.optim.Optimizer, cfg: Any) -> LRSchedule:
    """The schedule of a TrainConfig: cfg.schedule over cfg.trainer.max_iters from cfg.optim.lr."""
    return LRSchedule(optimizer, cfg.schedule, base_lr=cfg.optim.lr, max_iters=cfg.trainer.max_iters)
