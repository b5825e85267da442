"""The demo's ClipCap stage on a tiny encoder: it beats a constant caption and captions the held-out images."""

from eval_fixtures import tiny_encoder

from superclass.demo.caption import caption_scores


def test_caption_stage_beats_a_constant_caption(tmp_path):
    report = caption_scores(tiny_encoder(tmp_path / "enc"), tmp_path / "demo", steps=150)
    assert report["cider"] > report["baseline_cider"], report
    # the held-out captions are keyed by the held-out image's index (what the gallery shows beside the image)
    assert sorted(report["captions"])[:8] == list(range(8)) and len(report["captions"]) == report["images"]
    assert report["examples"] == [report["captions"][i] for i in range(5)]
