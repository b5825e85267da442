"""Sweep specs: typed, named, printable as YAML like recipes (`superclass pretrain sweep NAME --print-spec`).

A sweep trains every arm (a base recipe + overrides: a method or an ablation's variant) over the same grid of
`key: [values]` settings, every seed and every samples-seen value, probes each finished run with the same
evaluators on a labelled folder (train / val / test), picks each arm's setting on the validation split, and
reports that setting's test score (mean ± std over seeds) beside the paper's numbers for the comparison.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from pretrain.runtime.errors import ConfigError
from pretrain.runtime.recipes import RecipeBook


@dataclass
class Axis:
    """One grid dimension: a recipe key (any dotted key, e.g. optim.lr) and the values it takes."""

    key: str = ""
    values: list[Any] = field(default_factory=list)


def axes(grid: dict[str, list[Any]]) -> list[Axis]:
    """`{key: [values]}` as grid axes."""
    return [Axis(k, list(v)) for k, v in grid.items()]


@dataclass
class Arm:
    """One side of the comparison: a named base recipe plus overrides (e.g. `loss.kind=bce`)."""

    name: str = ""
    recipe: str = ""
    overrides: list[str] = field(default_factory=list)
    # this arm's own grid (the same number of values per axis as the sweep's: an equal tuning budget); [] = the sweep's
    grid: list[Axis] = field(default_factory=list)


@dataclass
class Probe:
    """A registered evaluator (pretrain.runtime.evaluators) run on every finished run, on val and on test."""

    name: str = "linear_probe"
    settings: dict[str, Any] = field(default_factory=dict)  # its settings; data and val_split are the sweep's


@dataclass
class SyntheticProbeData:
    """A synthetic labelled task (pretrain.data.labelled.synthetic_attribute_dataset) written as class folders."""

    attribute: str = ""  # "" = none: the user passes --data
    train: int = 600
    val: int = 300
    test: int = 300
    image_size: int = 40


@dataclass
class PaperRow:
    """The paper's numbers for one arm (at `samples` seen; 0 = the table's only budget)."""

    arm: str = ""
    samples: int = 0
    values: list[float] = field(default_factory=list)


@dataclass
class PaperTable:
    title: str = ""  # e.g. "Table 6: loss, B/16, 512M seen, batch 16k (DataComp-1B)"
    columns: list[str] = field(default_factory=list)  # e.g. ["IN-1k LP", "IN-1k ZS (LiT)"]
    rows: list[PaperRow] = field(default_factory=list)


@dataclass
class SweepSpec:
    arms: list[Arm] = field(default_factory=list)
    grid: list[Axis] = field(default_factory=list)  # e.g. [Axis("optim.lr", [1e-3, 2e-3])]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # run.seed values
    samples_key: Literal["run.total_samples", "run.steps"] = "run.total_samples"
    samples: list[int] = field(default_factory=list)  # values of samples_key ([] = the recipes' own)
    overrides: list[str] = field(default_factory=list)  # laid over every run (e.g. run.device=cpu)
    probes: list[Probe] = field(default_factory=lambda: [Probe("linear_probe"), Probe("fewshot")])
    select: str = ""  # the probe whose validation score picks the setting ("" = the first probe)
    data: str = ""  # labelled folder with train / val / test splits (--data overrides it)
    val_split: str = "val"  # selection reads only this split
    test_split: str = "test"  # the reported number
    synthetic: SyntheticProbeData = field(default_factory=SyntheticProbeData)
    paper: PaperTable = field(default_factory=PaperTable)

    def selector(self) -> str:
        return self.select or (self.probes[0].name if self.probes else "")

    def arm_grid(self, arm: Arm) -> list[Axis]:
        return arm.grid or self.grid

    def settings(self, arm: Arm) -> list[dict[str, Any]]:
        """The grid's combinations for `arm`, in order (one empty setting when the grid is empty)."""
        grid = self.arm_grid(arm)
        return [dict(zip([a.key for a in grid], values)) for values in itertools.product(*(a.values for a in grid))]

    def check(self) -> None:
        """Equal budgets and a usable selection, as one-line ConfigErrors."""
        if not self.arms:
            raise ConfigError("sweep: no arms (expected e.g. arms: [{name: superclass, recipe: superclass_tiny}])")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"sweep arms: names must be unique and non-empty, got {names}")
        if not self.seeds:
            raise ConfigError("sweep seeds: expected at least one seed")
        shape = [len(a.values) for a in self.grid]
        for arm in self.arms:
            own = [len(a.values) for a in self.arm_grid(arm)]
            if own != shape:
                raise ConfigError(
                    f"sweep arm {arm.name!r}: grid sizes {own} differ from the sweep's {shape} (unequal tuning budget)"
                )
        if self.selector() not in {p.name for p in self.probes}:
            raise ConfigError(f"sweep select: {self.selector()!r} is not one of the probes")
        if self.val_split == self.test_split:
            raise ConfigError(
                f"sweep: val_split and test_split are both {self.val_split!r} (select on a held-out split)"
            )


SWEEPS: RecipeBook[SweepSpec] = RecipeBook("sweep")
sweep = SWEEPS.register
get_sweep = SWEEPS.get


def _scale_probes() -> list[Probe]:
    """The paper's probes at scale: MAE-style LARS linear probe and big_vision's 10-shot."""
    return [Probe("linear_probe", {"recipe": "mae_in1k"}), Probe("fewshot", {"recipe": "fewshot_lsr"})]


def _ablation(base: str, arms: dict[str, list[str]], paper: PaperTable, lrs: list[float]) -> SweepSpec:
    return SweepSpec(
        arms=[Arm(name, base, overrides) for name, overrides in arms.items()],
        grid=[Axis("optim.lr", lrs)],
        seeds=[0],
        probes=_scale_probes(),
        paper=paper,
    )


_LP_ZS = ["IN-1k LP", "IN-1k ZS (LiT)"]


@sweep("demo_fair")
def demo_fair() -> SweepSpec:
    """superclass_tiny vs clip_tiny, the same lr grid and 3 seeds each, probed on the synthetic colour task; CPU.

    superclass pretrain sweep demo_fair --out runs/sweep_demo   (18 runs of ~1 min each on 2 cores)
    """
    return SweepSpec(
        arms=[Arm("superclass", "superclass_tiny"), Arm("clip", "clip_tiny")],
        grid=[Axis("optim.lr", [1e-3, 2e-3, 5e-3])],
        seeds=[0, 1, 2],
        overrides=["run.device=cpu", "run.save_every=0"],
        probes=[
            Probe("linear_probe", {"recipe": "lars_cpu", "overrides": ["features.num_workers=1"]}),
            Probe("fewshot", {"overrides": ["features.num_workers=1"]}),  # 2 cores: spawning 8 workers costs more
        ],
        synthetic=SyntheticProbeData(attribute="colour"),
    )


@sweep("demo_gap")
def demo_gap() -> SweepSpec:
    """Why SuperClass trails CLIP in the demo: one candidate cause changed per arm, at demo_fair's best lr, 3 seeds.

    superclass pretrain sweep demo_gap --out runs/sweep_gap   (27 runs on 2 cores; a steps_x4 run costs 4 runs' time)
    Arms: the recipe as is; IDF off (the interchangeable wording no image predicts stops outweighing the
    attribute words); a 70-way word-level head instead of the 49,408-way BPE one; the head's lr x10; token
    pooling (CLIP's) instead of the mean of patches; 4x the steps; clip_tiny as the reference, and clip_tiny
    with SuperClass's mean pooling (does the pooling cost CLIP as much?) and with 4x the steps (equal samples seen).
    """
    demo = demo_fair()
    variants = {
        "superclass": [],
        "idf_off": ["idf.mode=off"],
        "word_head": ["labels.tokenizer=word", "labels.tokenizer_path=synthetic"],
        "head_lr_x10": ["optim.lr_scales={head: 10}"],
        "token_pool": ["model.pool=token"],
        "steps_x4": ["run.steps=1200", "run.save_every=0"],
    }
    arms = [Arm(name, "superclass_tiny", overrides) for name, overrides in variants.items()]
    return SweepSpec(
        arms=[
            *arms,
            Arm("clip", "clip_tiny"),
            Arm("clip_avg_pool", "clip_tiny", ["model.pool=avg"]),
            Arm("clip_steps_x4", "clip_tiny", variants["steps_x4"]),
        ],
        grid=[Axis("optim.lr", [2e-3])],  # demo_fair's validation pick for both methods
        seeds=[0, 1, 2],
        overrides=demo.overrides,
        probes=demo.probes,
        synthetic=demo.synthetic,
    )


@sweep("superclass_vs_clip")
def superclass_vs_clip() -> SweepSpec:
    """SuperClass vs CLIP L/16 at equal samples seen (128M, 512M, 1.28B), the same lr grid (Table 8).

    superclass pretrain sweep superclass_vs_clip --out runs/sc_vs_clip --print-commands   (data.train in overrides)
    """
    return SweepSpec(
        arms=[Arm("superclass", "superclass_l16_512m"), Arm("clip", "clip_l16_512m")],
        grid=[Axis("optim.lr", [5e-4, 1e-3])],
        seeds=[0],
        samples=[128_000_000, 512_000_000, 1_280_000_000],
        probes=_scale_probes(),
        paper=PaperTable(
            "Table 8/9: L/16, batch 16k (DataComp-1B)",
            _LP_ZS,
            [
                PaperRow("clip", 128_000_000, [69.4, 48.8]),
                PaperRow("superclass", 128_000_000, [71.1, 51.2]),
                PaperRow("clip", 512_000_000, [79.7, 65.9]),
                PaperRow("superclass", 512_000_000, [80.5, 69.0]),
                PaperRow("clip", 1_280_000_000, [81.9, 71.4]),
                PaperRow("superclass", 1_280_000_000, [82.6, 73.6]),
            ],
        ),
    )


@sweep("tokenizer")
def tokenizer() -> SweepSpec:
    """SuperClass L/16, 512M seen: word-level vs CLIP BPE vs WordPiece vs SentencePiece labels (Tables 4 and 5).

    Set the word arm's vocabulary file (pretrain.labels.build_word_vocab + save_word_vocab over your captions) and,
    for the paper's 32k vocabularies, your own WordPiece / SentencePiece tokenizers, e.g.
    --config edited.yaml from `superclass pretrain sweep tokenizer --print-spec`.
    """
    return _ablation(
        "superclass_l16_512m",
        {
            "word": ["labels.tokenizer=word", "labels.tokenizer_path=word_vocab.txt"],
            "clip_bpe": [],
            "wordpiece": ["labels.tokenizer=hf", "labels.tokenizer_path=bert-base-uncased"],
            "sentencepiece": ["labels.tokenizer=hf", "labels.tokenizer_path=t5-base"],
        },
        PaperTable(
            "Tables 4-5: tokenizer, L/16, 512M seen, batch 16k (DataComp-1B)",
            _LP_ZS,
            [
                PaperRow("word", 0, [80.3, 68.2]),
                PaperRow("clip_bpe", 0, [80.5, 69.0]),
                PaperRow("wordpiece", 0, [80.5, 68.5]),
                PaperRow("sentencepiece", 0, [80.2, 67.8]),
            ],
        ),
        [5e-4],
    )


@sweep("idf")
def idf() -> SweepSpec:
    """SuperClass B/16, 512M seen: online IDF weights on vs off (Table 7)."""
    return _ablation(
        "superclass_b16_512m",
        {"idf": [], "no_idf": ["idf.mode='off'"]},  # quoted: YAML reads a bare off as false
        PaperTable(
            "Table 7: IDF, B/16, 512M seen, batch 16k (DataComp-1B)",
            _LP_ZS,
            [PaperRow("idf", 0, [76.0, 61.7]), PaperRow("no_idf", 0, [75.6, 60.8])],
        ),
        [5e-4],
    )


@sweep("loss")
def loss() -> SweepSpec:
    """SuperClass B/16, 512M seen: softmax vs BCE / ASL / soft-margin / two-way losses (Table 6)."""
    kinds = ["softmax", "bce", "asl", "soft_margin", "two_way"]
    lp, zs = [75.6, 73.6, 73.8, 73.5, 74.8], [60.8, 58.5, 58.7, 58.1, 59.7]
    return _ablation(
        "superclass_b16_512m",
        {k: [f"loss.kind={k}"] for k in kinds},
        PaperTable(
            "Table 6: loss, B/16, 512M seen, batch 16k (DataComp-1B)",
            _LP_ZS,
            [PaperRow(k, 0, [a, b]) for k, a, b in zip(kinds, lp, zs)],
        ),
        [5e-4],
    )


@sweep("stopwords")
def stopwords() -> SweepSpec:
    """SuperClass B/16, 512M seen: stopwords kept (the paper's default) vs removed before tokenising (Table 7)."""
    return _ablation(
        "superclass_b16_512m",
        {"kept": [], "removed": ["labels.stopwords=true"]},
        PaperTable(
            "Table 7: stopwords, B/16, 512M seen, batch 16k (DataComp-1B)",
            _LP_ZS,
            [PaperRow("kept", 0, [76.0, 61.7]), PaperRow("removed", 0, [75.7, 61.0])],
        ),
        [5e-4],
    )
