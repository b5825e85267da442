"""usage: $LLAVA_PYTHON tests/vlm/llava_reference.py {tokens,model} REQUEST.json OUT.pt

Runs the LLaVA-1.5 codebase itself (`llava-torch`, in the side venv of tests/vlm/make_llava_venv.sh) on what
tests/vlm/test_vlm_llava_parity.py asks, and saves what it gives:
- tokens: for each tokenizer folder and conversation, `preprocess_multimodal` + `preprocess` (`preprocess_v1` /
  `preprocess_plain`) input ids and targets, and `tokenizer_image_token` ids of eval prompts;
- model: `load_pretrained_model` on an exported folder, then per image and question `process_images`,
  `tokenizer_image_token`, the forward logits and greedy `generate` ids, as `llava/eval/model_vqa.py` runs them.
This file runs under torch 2.0.1 / transformers 4.36.2: it never imports the toolkit.
"""

from __future__ import annotations

import copy
import json
import sys
import types

import torch
from PIL import Image


def tokens(request: dict) -> dict:
    from llava import conversation as conversation_lib
    from llava.mm_utils import tokenizer_image_token
    from llava.train import train as llava_train
    from transformers import AutoTokenizer

    class DataArgs:  # what preprocess_multimodal reads
        is_multimodal = True
        mm_use_im_start_end = False

    out = {}
    for name, folder in request["tokenizers"].items():
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=False)  # as LLaVA's train.py / builder.py
        tokenizer.pad_token = tokenizer.unk_token  # train.py for v1
        rows = []
        for template, conversation in request["conversations"]:
            conversation_lib.default_conversation = conversation_lib.conv_templates[template]
            has_image = any("<image>" in turn["value"] for turn in conversation)
            sources = [copy.deepcopy(conversation)]
            if has_image:
                sources = llava_train.preprocess_multimodal(sources, DataArgs)
            result = llava_train.preprocess(sources, tokenizer, has_image=has_image)
            rows.append({"input_ids": result["input_ids"][0].tolist(), "labels": result["labels"][0].tolist()})
        prompts = [tokenizer_image_token(p, tokenizer) for p in request["prompts"]]
        out[name] = {"rows": rows, "prompts": prompts, "legacy": bool(tokenizer.legacy)}
    return out


def model(request: dict) -> dict:
    import llava.model.builder as builder
    from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token

    # load_pretrained_model hard-codes fp16; the comparison is in fp32, so its `torch.float16` reads float32 here
    fp32_torch = types.ModuleType("torch")
    fp32_torch.__dict__.update(torch.__dict__)
    fp32_torch.float16 = torch.float32
    builder.torch = fp32_torch
    path = request["model"]
    tokenizer, llava, image_processor, _ = builder.load_pretrained_model(
        path, None, get_model_name_from_path(path), device="cpu", device_map="cpu"
    )
    llava = llava.float().eval()
    rows = []
    for item in request["items"]:
        image = Image.open(item["image"]).convert("RGB")
        pixels = process_images([image], image_processor, llava.config).float()
        ids = tokenizer_image_token(item["prompt"], tokenizer, return_tensors="pt").unsqueeze(0)
        with torch.inference_mode():
            logits = llava(input_ids=ids, images=pixels).logits
            new = llava.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False, num_beams=1,
                                 max_new_tokens=item["max_new_tokens"], use_cache=True)  # fmt: skip
        answer = tokenizer.batch_decode(new, skip_special_tokens=True)[0].strip()
        rows.append({"pixels": pixels, "input_ids": ids[0], "logits": logits[0], "new_ids": new[0], "answer": answer})
    return {"rows": rows, "vocab": len(tokenizer), "image_aspect_ratio": llava.config.image_aspect_ratio}


if __name__ == "__main__":
    mode, request_file, out_file = sys.argv[1:4]
    request = json.loads(open(request_file).read())
    torch.save({"tokens": tokens, "model": model}[mode](request), out_file)
