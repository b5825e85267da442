"""The demo report: result tables, PNG plots and a gallery, built section by section, written as report.md and as
a self-contained report.html (`superclass.demo.markdown_html`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pretrain.runtime.metrics import read_metrics  # noqa: E402
from superclass.demo.markdown_html import write_html  # noqa: E402


@dataclass
class Row:
    """One result: what was measured, its value, the chance/baseline level, and whether it beats it."""

    stage: str
    model: str
    metric: str
    value: float
    chance: float
    higher_is_better: bool = True
    required: bool = True  # False: measured and shown against its baseline, but outside the verdict (see the note)

    @property
    def beats_chance(self) -> bool:
        return self.value > self.chance if self.higher_is_better else self.value < self.chance


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, relative png path)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def all_beat_chance(self) -> bool:
        """Whether every required row beats its chance level or baseline."""
        return all(r.beats_chance for r in self.rows if r.required)

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        verdict = "every required number beats its chance level"
        if not self.all_beat_chance():
            verdict = "SOME NUMBERS DO NOT BEAT CHANCE"
        lines += [f"**Verdict:** {verdict}.", ""]
        lines += ["| stage | model | metric | value | chance / baseline | beats it |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            mark = "yes" if r.beats_chance else ("**no**" if r.required else "no")
            mark += "" if r.required else " (reported)"
            lines.append(f"| {r.stage} | {r.model} | {r.metric} | {r.value:.4g} | {r.chance:.4g} | {mark} |")
        lines.append("")
        for caption, path in self.figures:
            lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
        lines += self.sections
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path) -> Path:
        """report.md, and report.html beside it with every image embedded; returns the Markdown path."""
        path = Path(out_dir) / "report.md"
        path.write_text(self.to_markdown())
        write_html(path, Path(out_dir) / "report.html", self.title)
        return path


def plot_loss_curves(runs: dict[str, Path], out_png: Path, title: str = "training loss", columns: int = 0) -> Path:
    """One panel per run (losses of different objectives are not on one scale), loss against step; `columns`
    panels a row (0: all in one row)."""
    cols = columns or len(runs)
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(runs) :]:
        ax.set_visible(False)
    for ax, (name, run_dir) in zip(axes.flat, runs.items()):
        records = read_metrics(Path(run_dir), evals=False)
        marker = "o" if len(records) == 1 else None  # a run logged once (a short test run) still shows its point
        ax.plot([r["step"] for r in records], [r["loss"] for r in records], color="tab:blue", marker=marker)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
