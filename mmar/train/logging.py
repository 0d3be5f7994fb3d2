"""Training logs: TensorBoard scalars (tensorboardX), a rich progress bar, a metric history.

Only process 0 writes TensorBoard files and draws the progress bar.

Public API:

- ``MetricWriter(logdir, enabled=True)``: ``scalars(step, metrics, prefix, record=True)``, ``flush()``,
  ``close()``; also keeps ``history`` (list of ``{'step': s, '<prefix>/<name>': value}``).
- ``TrainProgress(total, start=0, enabled=True)``: context manager with
  ``update(step, steps_per_sec=None, loss=None, samples_per_sec=None, mfu=None)``.
- ``announce(message, logger, enabled=True)``: log ``message`` at INFO and, when ``enabled``
  (process 0), print it as one line on stderr (shown whether or not logging is configured).
"""
from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping

__all__ = ["MetricWriter", "TrainProgress", "announce"]


class MetricWriter:
    """TensorBoard scalars under ``logdir`` plus an in-memory history of every logged value."""

    def __init__(self, logdir: str | os.PathLike, enabled: bool = True):
        self.logdir = Path(logdir)
        self.history: list[dict[str, Any]] = []
        self._writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.logdir))

    def scalars(self, step: int, metrics: Mapping[str, Any], prefix: str = "", record: bool = True) -> dict[str, float]:
        """Write the scalars to TensorBoard; ``record``: also append them to ``history``."""
        row: dict[str, Any] = {"step": int(step)}
        for name, value in metrics.items():
            key = f"{prefix}/{name}" if prefix else name
            v = float(value)
            row[key] = v
            if self._writer is not None and math.isfinite(v):
                self._writer.add_scalar(key, v, int(step))
        if record:
            self.history.append(row)
        return row

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TrainProgress:
    """A rich progress bar showing step, steps/s and the latest loss."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, description: str = "train"):
        self.total = total
        self.start = start
        self.enabled = enabled
        self.description = description
        self._progress = None
        self._task = None

    def __enter__(self) -> "TrainProgress":
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} steps/s{task.fields[extra]}"),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.description, total=self.total, completed=self.start, rate="-", loss="-", extra=""
            )
        return self

    def update(self, step: int, steps_per_sec: float | None = None, loss: float | None = None,
               samples_per_sec: float | None = None, mfu: float | None = None) -> None:
        if self._progress is None:
            return
        fields: dict[str, Any] = {}
        if steps_per_sec is not None:
            fields["rate"] = f"{steps_per_sec:.2f}"
        extra = (f", {samples_per_sec:.1f} samples/s" if samples_per_sec is not None else "") + (
            f", MFU {100 * mfu:.1f}%" if mfu is not None else "")
        if extra:
            fields["extra"] = extra
        if loss is not None:
            fields["loss"] = f"{loss:.4g}"
        self._progress.update(self._task, completed=step, **fields)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def announce(message: str, logger: logging.Logger, enabled: bool = True) -> None:
    """Log ``message`` at INFO on ``logger``; when ``enabled`` also print it on stderr."""
    logger.info(message)
    if enabled:
        print(message, file=sys.stderr, flush=True)
