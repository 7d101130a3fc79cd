"""Where training metrics go: a CSV file (one row per iteration), TensorBoard, and a PNG
learning curve. The learner and the loop return metric dicts; only this module writes them."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends one row per iteration to ``progress.csv`` and mirrors scalars to TensorBoard.

    A row with keys the header lacks (evaluation columns appear only on evaluation
    iterations) rewrites the file once with the extended header; missing cells stay empty.
    Resuming appends to the same file.
    """

    def __init__(self, out_dir: Path, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out_dir / "progress.csv"
        self._fields: list[str] | None = None
        if self.csv_path.exists() and self.csv_path.stat().st_size > 0:
            with open(self.csv_path, newline="") as f:
                self._fields = next(csv.reader(f), None)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def write(self, step: int, row: Mapping[str, Any]) -> None:
        if self._fields is None:
            self._fields = list(row)
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        new = [k for k in row if k not in self._fields]
        if new:
            with open(self.csv_path, newline="") as f:
                old = list(csv.DictReader(f))
            self._fields += new
            tmp = self.csv_path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, self._fields, restval="")
                w.writeheader()
                w.writerows(old)
            tmp.replace(self.csv_path)
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k, "")) for k in self._fields])
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self._tb.add_scalar(k, float(v), step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def read_progress(path: Path) -> dict[str, list[float]]:
    """progress.csv as columns of floats (non-numeric cells become nan)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(math.nan)
    return cols


def plot_learning_curve(progress_csv: Path, out_png: Path, title: str = "",
                        references: Mapping[str, float] | None = None) -> Path:
    """Adapted (last-trajectory) and first-trajectory returns on held-out and training tasks
    against environment steps, with optional horizontal reference lines (e.g. oracle)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = learning_curve_figure(read_progress(progress_csv), title, references)
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def learning_curve_figure(cols: Mapping[str, list[float]], title: str = "",
                          references: Mapping[str, float] | None = None) -> Any:
    """The learning curve's matplotlib figure (Agg), from progress columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    x = list(cols.get("charts/env_steps", []))
    xlabel = "environment steps"
    finite = [v for v in x if math.isfinite(v)]
    # retraining from logs only: env steps stay put, plot against updates (one evaluation of
    # a simulated run still has its env steps)
    if not finite or max(finite) <= 0 or (len(finite) > 1 and len(set(finite)) == 1):
        x, xlabel = list(cols.get("charts/grad_steps", [])), "gradient steps"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, label, style in (
        ("eval/test_final_return", "held-out, after adaptation", "-"),
        ("eval/test_first_return", "held-out, first trajectory (prior z)", "--"),
        ("eval/train_final_return", "training tasks, after adaptation", ":"),
    ):
        if key in cols:
            pts = [(a, b) for a, b in zip(x, cols[key]) if math.isfinite(b)]
            if pts:  # markers while points are few: a single evaluation must show
                ax.plot(*zip(*pts), style, label=label,
                        marker="o" if len(pts) <= 40 else None, ms=4)
    for name, value in (references or {}).items():
        ax.axhline(value, color="gray", lw=0.8, ls="-.")
        ax.annotate(name, (ax.get_xlim()[0], value), fontsize=8, va="bottom")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel("return (sum of rewards over a trajectory)")
    ax.set_title(title or "PEARL meta-training")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no evaluation yet", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    return fig
