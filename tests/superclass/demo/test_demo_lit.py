"""The demo's LiT stage: a short run beats chance on held-out images (zero-shot colour classes, retrieval)."""

from __future__ import annotations

import json
import math

from lit_fixtures import tiny_cnn_encoder

from superclass.demo.lit import lit_scores


def test_short_lit_stage_beats_chance_on_held_out_images(tmp_path):
    # A random CNN's pooled features keep colour (a ridge probe reads ~0.8 of it); cached features keep the
    # run short. A trainer that does not learn stays at chance: 1/6 for colour, 1/100 for retrieval R@1.
    overrides = ["augment=false", "cache_features=true", "data.synthetic_samples=1024", "data.synthetic_image_size=64"]
    overrides += ["data.num_workers=0", "run.log_every=20", "run.device=cpu"]
    out = lit_scores(tiny_cnn_encoder(tmp_path / "enc"), tmp_path / "run", steps=120, n_eval=150, overrides=overrides)
    assert out["zeroshot_colour_top1"] > 2 * out["zeroshot_colour_chance"], out
    assert out["retrieval_t2i_r1"] >= 3 * out["retrieval_chance"], out
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]  # not the run.evals rows
    assert losses[-1] < math.log(64) - 0.3, losses  # below the loss of uninformative embeddings (batch 64)
