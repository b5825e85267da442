"""usage: $LLAVA_PYTHON bench/peer_llava_side.py {eval,train} REQUEST.json OUT.pt

The LLaVA-1.5 codebase's side of bench/peers.py, run with the interpreter of its side venv (`llava-torch`, torch
2.0.1, transformers 4.36.2; tests/vlm/make_llava_venv.sh). It never imports the toolkit.
- eval: `load_pretrained_model` on a `--to llava` export, then `llava/eval/model_vqa_loader.py`'s own dataset and
  loader (`process_images`, `tokenizer_image_token`, batch 1) and its greedy `generate` loop, timed without the load;
- train: the same export, `llava/train/train.py`'s `LazySupervisedDataset` (`preprocess_multimodal`, `preprocess`,
  `expand2square`) and `DataCollatorForSupervisedDataset` on the first `batch` rows of a LLaVA JSON, then
  `LlavaLlamaForCausalLM` forward + backward + AdamW steps as HF's Trainer takes them (grad-norm clip 1.0), vision
  tower frozen (stage 2, full fine-tuning); the first step's loss, samples/s, and the batch it built.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import types

import torch


def load(path: str, device: str, dtype: str) -> tuple:
    """`load_pretrained_model` as the eval scripts call it; on the CPU its hard-coded fp16 reads `dtype` instead."""
    import llava.model.builder as builder
    from llava.mm_utils import get_model_name_from_path

    if device == "cpu" or dtype != "float16":
        patched = types.ModuleType("torch")
        patched.__dict__.update(torch.__dict__)
        patched.float16 = getattr(torch, dtype)
        builder.torch = patched
    tokenizer, model, processor, _ = builder.load_pretrained_model(
        path, None, get_model_name_from_path(path), device=device, device_map=device
    )
    return tokenizer, model.to(getattr(torch, dtype)), processor


def run_eval(request: dict) -> dict:
    """model_vqa_loader's loop (batch 1, greedy) over the question file; answers as that script writes them."""
    from llava.eval import model_vqa_loader as script
    from llava.utils import disable_torch_init

    device, dtype = request["device"], getattr(torch, request["dtype"])
    disable_torch_init()
    start = time.perf_counter()
    tokenizer, model, processor = load(request["model"], device, request["dtype"])
    load_s = time.perf_counter() - start
    with open(request["questions"]) as f:
        questions = [json.loads(line) for line in f]
    script.args = argparse.Namespace(conv_mode="vicuna_v1")  # CustomDataset reads the script's global `args`
    loader = script.create_data_loader(questions, request["image_folder"], tokenizer, processor, model.config)
    rows = []
    start = time.perf_counter()
    for (input_ids, image_tensor, image_sizes), line in zip(loader, questions):
        with torch.inference_mode():
            output_ids = model.generate(
                input_ids.to(device=device, non_blocking=True),
                images=image_tensor.to(dtype=dtype, device=device, non_blocking=True), image_sizes=image_sizes,
                do_sample=False, temperature=0, top_p=None, num_beams=1,
                max_new_tokens=request["max_new_tokens"], use_cache=True,
            )  # fmt: skip
        text = tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip()
        rows.append({"question_id": line["question_id"], "text": text})
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "load_s": load_s, "items_per_s": len(rows) / seconds}


def supervised_batch(request: dict, tokenizer: object, processor: object) -> dict:
    """train.py's dataset and collator on the first `batch` rows (vicuna_v1 conversations, images padded square)."""
    from llava import conversation as conversation_lib
    from llava.train import train as llava_train

    conversation_lib.default_conversation = conversation_lib.conv_templates["vicuna_v1"]  # --version v1
    tokenizer.pad_token = tokenizer.unk_token  # train.py for v1
    data_args = llava_train.DataArguments(data_path=request["data"], lazy_preprocess=True, is_multimodal=True,
                                          image_folder=request["image_folder"], image_aspect_ratio="pad")  # fmt: skip
    data_args.image_processor, data_args.mm_use_im_start_end = processor, False  # as train.py sets them
    dataset = llava_train.LazySupervisedDataset(request["data"], tokenizer, data_args)
    collator = llava_train.DataCollatorForSupervisedDataset(tokenizer=tokenizer)
    return collator([dataset[i] for i in range(request["batch"])])


def run_train(request: dict) -> dict:
    """Stage-2 steps on one batch: the first step's loss (initial weights) and samples/s over timed rounds."""
    device = request["device"]
    tokenizer, model, processor = load(request["model"], device, "float32")  # fp32 masters, as DeepSpeed keeps
    model.config.use_cache = False  # train.py
    batch = supervised_batch(request, tokenizer, processor)
    inputs = {k: v.to(device) for k, v in batch.items()}
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=request["lr"], weight_decay=0.0)  # HF Trainer's defaults otherwise
    bf16 = request["dtype"] == "bfloat16"

    def step() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # TrainingArguments.max_grad_norm
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    first = float(step())
    rates = []
    for _ in range(request["rounds"]):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(request["steps"]):
            step()
        if device != "cpu":
            torch.cuda.synchronize()
        rates.append(request["steps"] * request["batch"] / (time.perf_counter() - start))
    trainable = sum(p.numel() for p in params)
    return {"loss": first, "rates": rates, "batch": batch, "trainable": trainable}


if __name__ == "__main__":
    mode, request_file, out_file = sys.argv[1:4]
    with open(request_file) as f:
        request = json.load(f)
    torch.save({"eval": run_eval, "train": run_train}[mode](request), out_file)
