"""What a running job tells the person who started it: which step, how far, how long.

``execute_in_process`` blocks until the run ends, so the display listens to the run's events as
the instance stores them (``DagsterInstance.add_event_listener``: called in the process running
the steps, in order, for every STEP_START, STEP_SUCCESS, STEP_FAILURE and log entry). A ticker
thread redraws the one progress line so the elapsed time moves during a long step.

Steps are named in the business's words: the asset's name as a phrase ("customer summary"), a
check as "check on invoices (inbox): invoice ids unique", never a step key like ``ops__run_as_of``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Literal, TextIO

ProgressMode = Literal["quiet", "plain", "line", "steps", "debug"]

# Words that read better in capitals in a step's name.
_ACRONYMS = {"rfm": "RFM", "clv": "CLV", "fx": "FX", "dso": "DSO", "crm": "CRM", "gx": "GX"}
# Asset names that need a few more words to say what they are.
_NAMES = {
    "ops/run_as_of": "as-of date",
    "ops/published_snapshot": "published snapshot",
}


def _phrase(name: str) -> str:
    return " ".join(_ACRONYMS.get(word, word) for word in name.split("_"))


def asset_phrase(asset_path: str) -> str:
    """``staging/invoices`` -> "invoices (inbox)", ``features/customer_summary`` -> "customer
    summary"."""
    if asset_path in _NAMES:
        return _NAMES[asset_path]
    schema, _, name = asset_path.rpartition("/")
    return f"{_phrase(name)} (inbox)" if schema == "staging" else _phrase(name)


@dataclass(frozen=True)
class StepName:
    """A step as the CLI says it: a short label and the asset's or check's description."""

    label: str
    description: str = ""


def step_names() -> dict[str, StepName]:
    """Every step of the nightly job by step key, named from the assets' and checks' own words."""
    import dagster as dg

    from pipelines.definitions import all_assets, all_checks

    names: dict[str, StepName] = {}
    for definition in [*all_assets, *all_checks]:
        if not isinstance(definition, dg.AssetsDefinition):
            continue
        if definition.keys:
            # a multi-asset's step is named after the table it is named for, else in its own
            # words (delinquency_training writes the training features and the labels)
            op = definition.op
            key = next(
                (
                    key
                    for key in definition.keys
                    if op.name in (key.to_python_identifier(), key.path[-1])
                ),
                None,
            )
            if key is None:
                label, description = _phrase(op.name), op.description or ""
            else:
                label = asset_phrase(key.to_user_string())
                description = definition.descriptions_by_key.get(key) or ""
            names[op.name] = StepName(label, description.split("\n")[0])
        else:  # a definition of checks only: one op, one or more checks of one asset
            specs = list(definition.check_specs)
            label = f"check on {asset_phrase(specs[0].asset_key.to_user_string())}: "
            label += ", ".join(_phrase(spec.name) for spec in specs)
            description = (specs[0].description or "").split("\n")[0]
            names[definition.op.name] = StepName(label, description)
    return names


def readable_step(step_key: str | None, names: dict[str, StepName]) -> str:
    """The label of a step, or its key made readable if the job has gained a step since."""
    if step_key is None:
        return "the run"
    if step_key in names:
        return names[step_key].label
    return _phrase(step_key.replace("__", "_"))


@dataclass
class RunProgress:
    """Listens to one run's events and tells them in the chosen mode.

    ``quiet``: nothing (errors and the outcome are the caller's). ``plain``: only the warnings
    the steps log (output to a file or a pipe). ``line``: warnings, and one line redrawn in place:
    steps done of total, elapsed seconds, the running step and what it makes. ``steps``: a line
    per step started, finished or not run, with durations, and warnings. ``debug``: nothing
    here (Dagster's own event stream is on). Warnings are named by their step's label.
    """

    names: dict[str, StepName]
    total: int
    mode: ProgressMode
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    done: int = 0
    not_run: int = 0
    current: str | None = None
    warnings: list[str] = field(default_factory=list)
    _started: float = field(default_factory=time.perf_counter)
    _step_started: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ticker: threading.Thread | None = None
    _drawn: bool = False

    def __enter__(self) -> RunProgress:
        self._started = time.perf_counter()
        if self.mode == "line":
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._clear()

    def __call__(self, entry) -> None:  # dagster EventLogEntry
        """One event of the run, in the order the steps produced it."""
        event = entry.dagster_event
        step = entry.step_key
        with self._lock:
            if event is not None and event.event_type_value == "STEP_START":
                self.current = step
                self._step_started[step] = time.perf_counter()
                self._say(f"started  {readable_step(step, self.names)}")
            elif event is not None and event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                self.done += 1
                seconds = time.perf_counter() - self._step_started.get(step, self._started)
                verb = "finished" if event.event_type_value == "STEP_SUCCESS" else "FAILED  "
                self._say(f"{verb} {readable_step(step, self.names)} in {seconds:.1f}s")
                if self.current == step:
                    self.current = None
            elif event is None and entry.level >= logging.ERROR and step not in self._step_started:
                self.not_run += 1  # a step whose inputs failed: Dagster logs it and moves on
                self._say(f"not run  {readable_step(step, self.names)} (an earlier step failed)")
            elif event is None and entry.level == logging.WARNING and entry.user_message:
                self._warn(f"{readable_step(step, self.names)}: {entry.user_message}")
            self._draw()

    def _say(self, text: str) -> None:
        if self.mode == "steps":
            elapsed = time.perf_counter() - self._started
            self._clear()
            self.stream.write(f"{elapsed:6.1f}s [{self.done}/{self.total}] {text}\n")
            self.stream.flush()

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        if self.mode in ("plain", "line", "steps"):
            self._clear()
            self.stream.write(f"warning: {text}\n")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._draw()

    def _clear(self) -> None:
        if self._drawn:
            width = shutil.get_terminal_size().columns
            self.stream.write("\r" + " " * (width - 1) + "\r")
            self.stream.flush()
            self._drawn = False

    def _draw(self) -> None:
        if self.mode != "line" or self._stop.is_set():
            return
        elapsed = time.perf_counter() - self._started
        step = self.names.get(self.current or "")
        doing = (
            f"{step.label}: {step.description}"
            if step and step.description
            else readable_step(self.current, self.names)
            if self.current
            else "starting"
        )
        line = f"[{self.done}/{self.total}] {elapsed:5.0f}s  {doing}"
        width = shutil.get_terminal_size().columns - 1
        if len(line) > width:
            line = line[: max(width - 1, 0)] + "…"
        self.stream.write("\r" + line.ljust(width))
        self.stream.flush()
        self._drawn = True


def choose_mode(*, quiet: bool, verbose: bool, debug: bool, progress: bool | None) -> ProgressMode:
    """--debug > --verbose > --quiet > the progress line (on a terminal, or when forced)."""
    if debug:
        return "debug"
    if verbose:
        return "steps"
    if quiet:
        return "quiet"
    if progress is None:
        progress = sys.stderr.isatty()
    return "line" if progress else "plain"
