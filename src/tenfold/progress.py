"""tenfold's one progress bar: rich's, on the console the CLI configures (stderr, and only when stderr is a
terminal: ``tenfold.cli.main`` reconfigures rich), so ``--json`` and redirected output never hold bar frames."""
from __future__ import annotations

from typing import Callable


def progress_bar(label: str | None = None, fields: tuple[str, ...] = (), transient: bool = False,
                 remaining: bool = False, disable: bool = False):
    """A ``rich.progress.Progress``: ``label`` in bold (None: each task's own description), a bar, ``done/total``,
    the time elapsed (and left, with ``remaining``), then each of ``fields`` as ``name value`` (a task's
    ``fields``). ``transient``: the bar disappears when done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn(f"[bold]{label}" if label is not None else "[bold]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    columns += [TextColumn(f"{name} {{task.fields[{name}]}}" if name != "info" else "{task.fields[info]}")
                for name in fields]
    return Progress(*columns, transient=transient, disable=disable)


def loss_bar(total: int, label: str, quiet: bool = False) -> tuple[object, Callable[[int, int, float], None]]:
    """A training bar showing the loss, and its ``tick(step, total, loss)`` callback (the signature
    ``train_steps``' ``progress`` takes)."""
    bar = progress_bar(label, fields=("loss",), disable=quiet)
    job = bar.add_task(label, total=total, loss="-")
    return bar, lambda step, n, loss: bar.update(job, completed=step, loss=f"{loss:.3f}")
