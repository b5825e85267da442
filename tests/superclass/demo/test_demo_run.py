"""A short version of `superclass demo`: every stage runs and writes its outputs in the promised places, and
report.html shows the gallery."""

import base64
import html
import io
import json
import math
import re

from PIL import Image

from pretrain.runtime.metrics import read_metrics
from superclass.cli import main as superclass_main
from superclass.demo.config import DemoConfig
from superclass.demo.run import clear_previous_demo, run_demo


def test_short_demo_writes_report_plot_and_artifacts(tmp_path, capsys):
    cfg = DemoConfig(
        out=tmp_path,
        steps=40,
        samples=512,
        probe_train=120,
        probe_val=60,
        eval_images=40,
        downstream_steps=10,
        caption_steps=10,
        vlm_stage1_steps=3,
        vlm_stage2_steps=6,
        vlm_samples=60,
        vlm_eval_images=6,
        gallery_images=3,
    )
    report = run_demo(cfg)
    err = capsys.readouterr().err
    for method in ("superclass", "clip"):  # each LLaVA stage's progress names its encoder
        assert f"[{method}/llava/stage1] 3/3 steps (" in err and f"[{method}/llava/stage2] 6/6 steps (" in err
    assert (tmp_path / "report.md").read_text().startswith("# SuperClass toolkit demo")
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    for method in ("superclass", "clip"):
        assert (tmp_path / method / "encoder" / "model.safetensors").is_file()
    assert len(report.rows) == 20 and all(math.isfinite(r.value) for r in report.rows)
    stages = {(r.stage, r.model) for r in report.rows}
    assert stages == {(s, m) for s in ("pretrain", "probe", "lit", "caption", "vlm") for m in ("superclass", "clip")}
    in_verdict = {(r.model, r.metric.split("-format")[0]): r.required for r in report.rows if r.stage == "vlm"}
    assert in_verdict == {(m, b): b in ("VQAv2", "POPE") for m in ("superclass", "clip")
                          for b in ("VQAv2", "MMBench", "POPE", "ScienceQA")}  # fmt: skip
    assert (tmp_path / "superclass" / "lit").is_dir() and (
        tmp_path / "clip" / "caption" / "caption_demo.json"
    ).is_file()
    assert (tmp_path / "clip" / "llava" / "stage2" / "llava" / "config.json").is_file()
    serve = f"superclass vlm serve --model {tmp_path / 'superclass/llava/stage2/llava'} --model {tmp_path / 'clip'}"
    assert serve in (tmp_path / "report.md").read_text()
    assert (tmp_path / "superclass" / "llava" / "scores" / "mmbench" / "results" / "metrics.json").is_file()
    # SuperClass learns caption tokens quickly: even 40 steps beat the word-frequency prior
    sc_tokens = next(r for r in report.rows if r.model == "superclass" and r.stage == "pretrain")
    assert sc_tokens.beats_chance, sc_tokens
    probe = {r.model: r.value for r in report.rows if r.metric.startswith("linear probe")}
    gap = f"SuperClass minus CLIP: {probe['superclass'] - probe['clip']:+.1f} points"
    assert "## SuperClass vs CLIP here" in (tmp_path / "report.md").read_text() and gap in report.to_markdown()
    # the tiny recipes' own run.evals ran during pretraining (rows in metrics.jsonl), as a user's first run shows
    assert {r["eval"] for r in read_metrics(tmp_path / "superclass", evals=True)} == {"fewshot", "linear_probe"}
    _check_gallery_page(tmp_path)
    # a rerun into the same --out starts over: the demo's own outputs go (runs refuse a used dir), nothing else
    (tmp_path / "notes.txt").write_text("mine")
    clear_previous_demo(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _check_gallery_page(out):
    """report.html: every gallery image embedded as a PNG, beside the truth and each encoder's caption and answers."""
    page = (out / "report.html").read_text()
    entries = json.loads((out / "gallery" / "gallery.json").read_text())
    assert len(entries) == 3
    images = dict(re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page))
    assert len(images) == 3 + 2  # the gallery's images and the two loss plots
    for e in entries:
        thumbnail = Image.open(io.BytesIO(base64.b64decode(images[f"held-out image {e['index']}"])))
        assert thumbnail.format == "PNG" and thumbnail.size == (160, 160)
        assert html.escape(e["caption"], quote=False) in page
        assert [q["answer"] for q in e["questions"]][-1] in ("yes", "no") and len(e["questions"]) == 5
        for method in ("superclass", "clip"):
            said = e["encoders"][method]
            assert len(said["answers"]) == 5 and html.escape(said["caption"], quote=False) in page
        for k, q in enumerate(e["questions"]):  # the question's row: text, truth, then each encoder's answer
            cells = "".join(f"<td>{re.escape(html.escape(c, quote=False))}</td>" for c in (q["text"], q["answer"]))
            said = [e["encoders"][m]["answers"][k] or "(empty)" for m in ("superclass", "clip")]
            answers = "".join(f"<td>{re.escape(html.escape(a, quote=False))}( ✓)?</td>" for a in said)
            assert re.search(f"<tr>{cells}{answers}</tr>", page), (q, said)
    assert "stage_loss_curves.png" in (out / "report.md").read_text()


def test_dispatcher_lists_commands_and_rejects_unknown(capsys):
    assert superclass_main(["--help"]) == 0
    assert "pretrain" in capsys.readouterr().out
    assert superclass_main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
