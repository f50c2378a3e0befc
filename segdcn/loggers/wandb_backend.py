"""Starting and feeding a W&B run so that W&B can never stop or stall the training.

wandb is imported only here and only when a run starts (importing it takes about a second).
Every call into it is guarded: the first failure logs one warning and turns W&B off for the
rest of the run, while the local files (metrics.jsonl, summary.json) keep everything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")

# Settings for runs on clusters and offline machines. Each applies only when the user has not
# set it through its WANDB_* variable, which wandb would otherwise lose to an explicit setting.
DEFAULT_SETTINGS: dict[str, Any] = {
    # A stuck W&B service or network fails the start after a minute instead of hanging the job.
    "init_timeout": 60.0,
    "login_timeout": 30.0,
    # Console capture wraps stdout/stderr of the whole process (tqdm bars, DDP workers, Hydra's
    # logging); the run's own log file already holds what matters.
    "console": "off",
    # No copy of the code tree into each run; the git commit is recorded anyway.
    "save_code": False,
    "disable_code": True,
}


def resolve_mode(config_mode: str | None) -> str:
    """logger.mode, else $WANDB_MODE ($WANDB_DISABLED=true: disabled), else offline.

    $WANDB_MODE is read here and passed on: wandb reads the environment only once per process.
    Its value is left for wandb to check, so a bad one fails the start (with a warning), not the run.
    """
    if config_mode is not None:
        if config_mode not in MODES:
            raise ValueError(f"logger.mode={config_mode!r}: expected one of {', '.join(MODES)} or null")
        return config_mode
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1", "yes"):
        return "disabled"
    return os.environ.get("WANDB_MODE") or "offline"


def env_name(setting: str) -> str:
    """wandb's environment variable for a setting (x_foo is read from WANDB__FOO)."""
    if setting.startswith("x_"):
        return "WANDB__" + setting[2:].upper()
    return "WANDB_" + setting.upper()


def settings_kwargs() -> dict[str, Any]:
    return {k: v for k, v in DEFAULT_SETTINGS.items() if env_name(k) not in os.environ}


class WandbRun:
    """A started W&B run behind calls that warn once and stop W&B on the first error."""

    def __init__(self, run: Any, wandb: Any):
        self.run = run
        self.wandb = wandb
        self.id: str = run.id
        self.dir = Path(run.dir).parent  # <run dir>/wandb/<offline-run-...|run-...>
        self.mode: str = "offline" if run.offline else ("disabled" if run.disabled else "online")
        # A resumed online run starts at the server's next step; earlier steps would be refused
        # with one wandb warning per call, so they are not sent (metrics.jsonl keeps them).
        self.first_step: int = int(run.step) if self.mode == "online" else 0

    def log(self, what: str, payload: Mapping[str, Any], step: int) -> None:
        if step >= self.first_step:
            self.call(what, lambda run: run.log(dict(payload), step=int(step)))

    def update_summary(self, values: Mapping[str, Any]) -> None:
        self.call("summary update", lambda run: run.summary.update(dict(values)))

    def call(self, what: str, fn: Callable[[Any], Any]) -> None:
        if self.run is None:
            return
        try:
            fn(self.run)
        except Exception as exc:  # any wandb failure: warn, then go on without W&B
            log.warning(
                "W&B %s failed (%s: %s); W&B logging is off from now on, local files continue",
                what,
                type(exc).__name__,
                exc,
            )
            self._drop()

    def finish(self, exit_code: int, preempted: bool = False) -> None:
        if self.run is None:
            return
        try:
            if preempted:  # W&B shows the run as preempted, and resuming it continues the same run
                self.run.mark_preempting()
            self.run.finish(exit_code=exit_code)
        except Exception as exc:
            log.warning("W&B finish failed (%s: %s)", type(exc).__name__, exc)
        self.run = None

    def _drop(self) -> None:
        run, self.run = self.run, None
        try:
            run.finish(exit_code=1)
        except Exception:
            # The W&B service is gone (killed, out of memory). Tearing the connection down now keeps
            # wandb's exit hook from printing the same error again when the training ends.
            try:
                self.wandb.teardown()
            except Exception:
                pass  # the warning already said what happened


def start_wandb(
    *,
    run_dir: Path,
    mode: str,
    project: str,
    entity: str | None,
    group: str | None,
    name: str | None,
    tags: list[str],
    job_type: str,
    config: Mapping[str, Any],
    run_id: str | None,
) -> WandbRun | None:
    """Start (or, with `run_id`, continue) a W&B run writing under run_dir/wandb; None if it cannot start."""
    try:
        import wandb

        # W&B makes run_dir/wandb itself; creating it here reports an unusable run dir up front.
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            name=name,
            tags=list(tags) or None,
            job_type=job_type,
            config=dict(config),
            dir=str(run_dir),
            mode=mode,
            id=run_id,
            resume="allow" if run_id else None,
            reinit="create_new",  # tests and notebooks start several runs in one process
            settings=wandb.Settings(**settings_kwargs()),
        )
    except Exception as exc:  # wandb raises many types (UsageError, CommError, ValidationError, OSError...)
        log.warning(
            "W&B could not start (%s: %s); continuing with local files only (metrics.jsonl, summary.json) in %s",
            type(exc).__name__,
            exc,
            run_dir,
        )
        return None
    if run is None or getattr(run, "disabled", False):
        return None
    started = WandbRun(run, wandb)
    if started.mode == "offline":
        log.info("W&B run %s is offline in %s; upload it later with `wandb sync %s`", run.id, started.dir, started.dir)
    return started
