"""Stopping a run cleanly when the scheduler says it will end it: SLURM sends SIGTERM (or the signal of
`--signal`, e.g. SIGUSR1) some seconds before it kills a job, and submitit sends SIGUSR2 at the time
limit. The handler only records the signal; the trainer looks after each optimizer step, writes
last.pt at that iteration, hands the signal to the handler that was there before when that is a Python
one (submitit's: it requeues the job), and otherwise exits with PREEMPTED_EXIT_CODE, so a wrapper (or
`scontrol requeue`) starts the job again and `trainer.resume=auto` continues exactly.

    with StopSignals(["SIGTERM", "SIGUSR1"]) as signals:
        ...
        if signals.received: ...
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence

log = logging.getLogger(__name__)

# sysexits.h's EX_TEMPFAIL, "a temporary failure; the user is invited to retry": stopped by a signal with
# last.pt written at the iteration reached; start the same command again to continue
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
    """Raised by the trainer after it saved on a stop signal; segdcn-train exits with PREEMPTED_EXIT_CODE."""

    def __init__(self, signal_name: str, iteration: int):
        super().__init__(f"{signal_name} received: stopped at iteration {iteration} with last.pt written")
        self.signal_name = signal_name
        self.iteration = iteration


def signal_number(name: str) -> int:
    value = getattr(signal, name, None)
    if not name.startswith("SIG") or not isinstance(value, signal.Signals):
        raise ValueError(f"{name!r} is not a signal name of this platform (such as SIGTERM, SIGUSR1)")
    return int(value)


class StopSignals:
    """Records the first of `names` received while active (later ones are logged and ignored, so a
    second signal during the save changes nothing), and restores the previous handlers on exit."""

    def __init__(self, names: Sequence[str]):
        self.numbers = [signal_number(n) for n in names]
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, number: int, frame) -> None:
        name = signal.Signals(number).name
        if self.received is None:
            self.received = name
            log.warning("%s received: stopping after this optimizer step, with last.pt written", name)
        else:
            log.warning("%s received while stopping on %s: ignored", name, self.received)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            if self.numbers:
                log.warning("not in the main thread: trainer.save_on_signals cannot install its handlers")
            return self
        for number in self.numbers:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)

    def hand_over(self) -> None:
        """After the save: give the received signal to the handler that was installed before, when that
        is a Python function (submitit's, which requeues the job and exits); returns otherwise."""
        if self.received is None:
            return
        number = signal_number(self.received)
        previous = self._previous.get(number)
        if callable(previous):
            log.info("handing %s over to the handler installed before segdcn's (%r)", self.received, previous)
            previous(number, None)
