"""Caption metrics with pycocoevalcap: PTB tokenisation, BLEU-1..4, METEOR, ROUGE-L, CIDEr (CIDEr-D), SPICE if it runs.

usage: superclass captioning score --results R.json --annotations A.json --out DIR

Results are COCO results JSON (`[{"image_id", "caption"}]`, one per image); annotations are COCO caption
annotations or a Karpathy `dataset_coco.json` (its `test` split, or `--split`). The image-id sets must match
exactly: CIDEr's IDF is computed over the scored images' references, so a subset gives a different score.
SPICE needs Stanford CoreNLP, which it downloads on first use; offline it fails and metrics.json says why.
Scores are pycocoevalcap's raw values (multiply by 100 for the usual tables).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError
from pretrain.runtime.jsonl import read_json_file

METRIC_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _read_json(path: str | Path, what: str) -> Any:
    return read_json_file(path, f"{what} file {path} does not exist", DataError, expected=f"a {what} file")


def load_results(path: str | Path) -> dict[int, str]:
    data = _read_json(path, "results")
    if not isinstance(data, list) or not all(isinstance(r, dict) and {"image_id", "caption"} <= set(r) for r in data):
        raise DataError(f"results file {path} must be a list of {{'image_id', 'caption'}} records")
    out: dict[int, str] = {}
    for r in data:
        if r["image_id"] in out:
            raise DataError(f"results file {path} has two captions for image_id {r['image_id']} (one per image)")
        out[r["image_id"]] = str(r["caption"])
    return out


def load_references(path: str | Path, split: str = "test") -> dict[int, list[str]]:
    """image_id -> reference captions, from COCO caption annotations or a Karpathy split file."""
    data = _read_json(path, "annotations")
    if isinstance(data, dict) and isinstance(data.get("images"), list) and "annotations" not in data:
        from captioning.data import karpathy_to_coco

        data = karpathy_to_coco(path, split)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"annotations file {path} is neither COCO caption annotations nor a Karpathy split file")
    refs: dict[int, list[str]] = {}
    for a in data["annotations"]:
        refs.setdefault(a["image_id"], []).append(str(a["caption"]))
    return refs


def check_ids(results: dict[int, str], refs: dict[int, list[str]]) -> None:
    if set(results) == set(refs):
        return
    extra, missing = sorted(set(results) - set(refs)), sorted(set(refs) - set(results))
    raise DataError(
        f"results cover {len(results)} images and annotations {len(refs)}: {len(missing)} annotated images have no "
        f"caption (e.g. {missing[:3]}) and {len(extra)} captioned images are not annotated (e.g. {extra[:3]}); "
        "score the exact annotated set (CIDEr's IDF depends on it)"
    )


def java_available() -> bool:
    return shutil.which("java") is not None


def simple_tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    """Lower-case, punctuation stripped: a stand-in for the PTB tokenizer when Java is absent (not comparable)."""
    table = str.maketrans({c: " " for c in ".,!?;:\"'()[]{}-"})
    return {k: [" ".join(c.lower().translate(table).split()) for c in v] for k, v in captions.items()}


def compute_metrics(
    results: dict[int, str], refs: dict[int, list[str]], spice: bool = True, tokenize: str = "ptb"
) -> dict[str, Any]:
    """The COCO caption metrics over matching image-id sets (`tokenize`: ptb, or simple when Java is missing)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    check_ids(results, refs)
    res_in = {k: [{"caption": c}] for k, c in results.items()}
    gts_in = {k: [{"caption": c} for c in v] for k, v in refs.items()}
    notes: list[str] = []
    if tokenize == "ptb" and java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        gts, res = PTBTokenizer().tokenize(gts_in), PTBTokenizer().tokenize(res_in)
    else:
        notes.append("simple tokenizer (no Java/PTB): not comparable to published numbers")
        gts, res = simple_tokenize(refs), simple_tokenize({k: [c] for k, c in results.items()})
    metrics: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap's BLEU prints its n-gram counts
        bleu, _ = Bleu(4).compute_score(gts, res)
    metrics.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if java_available():
        from pycocoevalcap.meteor.meteor import Meteor

        metrics["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    else:
        metrics["METEOR"] = None
        notes.append("METEOR skipped: no java on PATH")
    metrics["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    metrics["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if spice:
        metrics["SPICE"], note = _spice(gts, res)
        if note:
            notes.append(note)
    metrics["num_images"] = len(results)
    if notes:
        metrics["notes"] = notes
    return metrics


def _spice(gts: dict, res: dict) -> tuple[float | None, str]:
    """SPICE, or None and why (CoreNLP is downloaded on first use and fails offline)."""
    if not java_available():
        return None, "SPICE skipped: no java on PATH"
    try:
        from pycocoevalcap.spice.spice import Spice

        return float(Spice().compute_score(gts, res)[0]), ""
    except Exception as exc:  # noqa: BLE001 - SPICE's failures (download, Java, lmdb) are all non-fatal here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"SPICE not computed ({reason}); vendor stanford-corenlp-3.6.0 jars into pycocoevalcap/spice/lib"


def score_files(
    results: str | Path, annotations: str | Path, out_dir: str | Path, split: str = "test", spice: bool = True
) -> dict[str, Any]:
    """Score a results JSON against annotations; writes `out_dir/metrics.json` and returns the metrics."""
    metrics = compute_metrics(load_results(results), load_references(annotations, split), spice=spice)
    metrics.update({"results": str(results), "annotations": str(annotations)})
    write_text_atomically(Path(out_dir) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
