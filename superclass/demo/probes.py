"""The demo's probe stage: linear probe and 10-shot of a frozen encoder on a held-out attribute task
(`eval.probes.probe.probe_encoder`, on the sweeps' synthetic train/test draws)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.probes.probe import probe_encoder
from pretrain.data.labelled import SYNTHETIC_SPLIT_SEEDS, synthetic_attribute_dataset
from superclass.demo.config import IMAGE_SIZE, DemoConfig
from superclass.demo.report import Report, Row


def probe(artifact: Path, cfg: DemoConfig) -> dict[str, Any]:
    """Linear probe and 10-shot scores of one encoder artifact, with the task's chance level."""
    seeds = SYNTHETIC_SPLIT_SEEDS  # scored on the held-out "test" draw (seed 1), as the sweeps' test split
    train = synthetic_attribute_dataset(cfg.attribute, cfg.probe_train, seed=seeds["train"], image_size=IMAGE_SIZE)
    val = synthetic_attribute_dataset(cfg.attribute, cfg.probe_val, seed=seeds["test"], image_size=IMAGE_SIZE)
    return probe_encoder(artifact, train, val, shots=10, seeds=3)


def probe_stage(report: Report, method: str, artifact: Path, cfg: DemoConfig) -> None:
    """Probe one encoder and add its two rows to the report."""
    print(f"[demo] probing {method} ({cfg.attribute} task) ...", flush=True)
    result = probe(artifact, cfg)
    report.add(
        Row("probe", method, f"linear probe top-1, {cfg.attribute} (%)", result["linear_probe_top1"], result["chance"])
    )
    report.add(Row("probe", method, f"10-shot top-1, {cfg.attribute} (%)", result["fewshot_top1"], result["chance"]))
