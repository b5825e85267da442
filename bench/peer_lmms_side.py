"""usage: $LMMS_EVAL_PYTHON bench/peer_lmms_side.py eval REQUEST.json OUT.pt

lmms-eval's side of bench/peers.py, run with the interpreter of a venv holding lmms-eval (0.7.3 measured). It never
imports the toolkit. Its `llava_hf` model class (`lmms_eval.models.simple.llava_hf.LlavaHf`: the HF directory
loaded with transformers' `LlavaForConditionalGeneration`, the processor's chat template, greedy, batch 1 as it
asserts) answers the questions through its own `generate_until`, on requests built as its `vqav2` task builds them
(`doc_to_text` = the question + "\\nAnswer the question using a single word or phrase.", the image as the visual,
`generation_kwargs` max_new_tokens). Timed without the model load.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from PIL import Image


def run_eval(request: dict) -> dict:
    from lmms_eval.api.instance import Instance
    from lmms_eval.models.simple.llava_hf import LlavaHf

    start = time.perf_counter()
    model = LlavaHf(
        pretrained=request["model"],
        device=request["device"],
        device_map=request["device"],
        dtype=request["dtype"],
        batch_size=1,
    )  # device_map: its default "" is refused by transformers 5
    load_s = time.perf_counter() - start
    with open(request["questions"]) as f:
        docs = [json.loads(line) for line in f]
    model.task_dict = {
        "peers": {"test": docs}
    }  # what generate_until reads the docs from (lmms-eval's evaluator sets it)
    folder = request["image_folder"]

    def doc_to_visual(doc: dict) -> list:
        return [Image.open(os.path.join(folder, doc["image"])).convert("RGB")]

    requests = [
        Instance("generate_until", (doc["text"], {"max_new_tokens": request["max_new_tokens"]}, doc_to_visual, i,
                                    "peers", "test"), idx=0, metadata={"task": "peers", "doc_id": i, "repeats": 1})
        for i, doc in enumerate(docs)
    ]  # fmt: skip
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = model.generate_until(requests)
    seconds = time.perf_counter() - start
    texts = [getattr(out, "text", out) for out in outputs]
    rows = [{"question_id": doc["question_id"], "text": text.strip()} for doc, text in zip(docs, texts)]
    return {"rows": rows, "seconds": seconds, "load_s": load_s, "items_per_s": len(rows) / seconds}


if __name__ == "__main__":
    mode, request_file, out_file = sys.argv[1:4]
    with open(request_file) as f:
        request = json.load(f)
    torch.save({"eval": run_eval}[mode](request), out_file)
