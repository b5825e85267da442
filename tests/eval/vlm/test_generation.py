"""Batched LLaVA answers equal one-at-a-time HF generate token for token; runs resume (and refuse answers made
differently); bad images are retried; one predictions reader; 2 gloo ranks."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from llava_fixtures import build_tiny_llava, synthetic_image, synthetic_requests
from PIL import Image

from eval.vlm.generation import (
    GenerationConfig,
    Request,
    generate_answers,
    generate_batch_ids,
    generate_one_by_one,
    load_model,
)
from eval.vlm.predictions import read_predictions, signature_path
from pretrain.runtime.errors import UserError
from pretrain.runtime.jsonl import repair_tail
from vlm.single_answer import decode_answer, greedy_ids

N = 10
TEXT_ONLY = (3,)


def _requests() -> list[Request]:
    """10 requests of different lengths, one text-only, one with its own token limit."""
    requests = synthetic_requests(N, text_only=TEXT_ONLY)
    requests[5].max_new_tokens = 4
    return requests


def _cfg(**kw) -> GenerationConfig:
    return GenerationConfig(**{"device": "cpu", "max_new_tokens": 12, "progress": False, **kw})


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    """The tiny model dir, the loaded model + processor, and the one-at-a-time reference ids."""
    model_dir = build_tiny_llava(tmp_path_factory.mktemp("llava"))
    model, processor = load_model(model_dir, torch.device("cpu"), torch.float32)
    ref = {r.id: _one_by_one(model, processor, r) for r in _requests()}
    return model_dir, model, processor, ref


def _one_by_one(model, processor, request: Request) -> list[int]:
    """`vlm.single_answer.greedy_ids` (the path `vlm chat` answers with) on one request."""
    image = request.image() if request.image is not None else None
    return greedy_ids(model, processor, request.prompt, image, request.max_new_tokens or 12)


def _reference_answers(llava) -> dict:
    _, _, processor, ref = llava
    return {qid: decode_answer(processor.tokenizer, ids) for qid, ids in ref.items()}


def test_reference_is_non_trivial(llava):
    """The fixture's greedy answers differ across prompts; some stop at EOS early, some run to the cap."""
    _, _, processor, ref = llava
    lengths = [len(ids) for ids in ref.values()]
    assert len({tuple(ids) for ids in ref.values()}) >= N - 2
    assert min(lengths) < 12 and max(lengths) == 12
    assert len(ref[5]) <= 4


def test_mixed_batch_equals_one_by_one_token_for_token(llava):
    _, model, processor, ref = llava
    requests = _requests()[:8]
    images = [r.image() if r.image is not None else None for r in requests]
    got = generate_batch_ids(model, processor, requests, images, 12)
    assert got == [ref[r.id] for r in requests]


def test_left_padding_needs_the_attention_mask(llava):
    """Negative control: with an all-ones mask (pads attended, positions shifted) short rows change: parity has teeth.

    (Without any mask, generate rebuilds it from `pad_token_id`, so the control must pass ones explicitly.)
    """
    _, model, processor, ref = llava
    requests = _requests()[:8]
    images = [r.image() for r in requests if r.image is not None]
    inputs = processor(images=images, text=[r.prompt for r in requests], padding=True, return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any() and inputs["input_ids"][0, 0] == processor.tokenizer.pad_token_id
    with torch.inference_mode():
        out = model.generate(
            input_ids=inputs["input_ids"], attention_mask=torch.ones_like(inputs["attention_mask"]),
            pixel_values=inputs["pixel_values"], max_new_tokens=12, do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=processor.tokenizer.eos_token_id,
        )  # fmt: skip
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    assert any(row[: len(ref[r.id])] != ref[r.id] for row, r in zip(new, requests))


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_generate_answers_matches_one_by_one(llava, tmp_path, batch_size):
    model_dir = llava[0]
    out = tmp_path / "predictions.jsonl"
    answers, stats = generate_answers(model_dir, _requests(), out, _cfg(batch_size=batch_size))
    assert answers == _reference_answers(llava)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["question_id"] for row in rows) == list(range(N))
    assert (stats.answered, stats.skipped, stats.resumed) == (N, 0, 0)


def test_generate_one_by_one_decodes_the_reference(llava):
    _, model, processor, _ = llava
    request = _requests()[0]
    assert generate_one_by_one(model, processor, request, 12) == _reference_answers(llava)[0]


def test_chat_answers_as_the_batched_runner(llava, tmp_path):
    """`vlm chat` and the eval runner share one generation path (vlm.single_answer): one answer for one prompt."""
    from vlm.chat import chat, chat_prompt

    image = tmp_path / "image.png"
    synthetic_image(0).save(image)
    question = "What colour is the circle?"
    replies = chat(llava[0], image, question, max_new_tokens=12, emit=lambda _: None)
    request = Request(0, chat_prompt([], question), lambda: Image.open(image).convert("RGB"))
    assert replies == [generate_answers(llava[0], [request], tmp_path / "p.jsonl", _cfg())[0][0]]


def test_kill_and_resume(llava, tmp_path):
    """Stop after 2 batches, simulate a kill mid-write, rerun: each id once, same answers as an uninterrupted run."""
    out = tmp_path / "predictions.jsonl"
    generate_answers(llava[0], _requests(), out, _cfg(batch_size=3, max_batches=2))
    assert len(read_predictions(out)[0]) == 6
    with open(out, "a") as f:
        f.write('{"question_id": 99, "ans')  # the kill's truncated last line
    assert len(read_predictions(out)[0]) == 6
    # batch size and device are not part of the signature: a resume may change them
    answers, stats = generate_answers(llava[0], _requests(), out, _cfg(batch_size=4, device="auto"))
    assert stats.resumed == 6 and stats.answered == N - 6
    ids = [json.loads(line)["question_id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == list(range(N))
    assert answers == _reference_answers(llava)


def test_repair_tail_keeps_complete_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question_id": 1, "answer": "a"}\n{"question_id": 2, "an')
    repair_tail(path)
    assert path.read_text() == '{"question_id": 1, "answer": "a"}\n'


def test_failed_images_are_error_rows_retried_next_run(llava, tmp_path):
    def broken() -> None:
        raise OSError("truncated JPEG")

    def bomb() -> None:
        raise Image.DecompressionBombError("too many pixels")

    requests = _requests()
    good = {2: requests[2].image, 7: requests[7].image}
    requests[2].image, requests[7].image = broken, bomb
    out = tmp_path / "p.jsonl"
    answers, stats = generate_answers(llava[0], requests, out, _cfg(batch_size=4))
    ref = _reference_answers(llava)
    assert answers == {k: v for k, v in ref.items() if k not in (2, 7)}  # an error row is not the answer ""
    assert (stats.skipped, stats.failed) == (2, 2)
    rows, counts = read_predictions(out)
    assert "OSError" in rows[2]["error"] and "DecompressionBombError" in rows[7]["error"]
    assert counts["image_errors"] == 2
    requests[2].image, requests[7].image = good[2], good[7]  # the images are readable now: a rerun retries them
    again, stats = generate_answers(llava[0], requests, out, _cfg(batch_size=4))
    assert again == ref
    assert (stats.resumed, stats.answered, stats.skipped, stats.failed) == (N - 2, 2, 0, 0)
    rows, counts = read_predictions(out)
    assert rows[2]["answer"] == ref[2] and "error" not in rows[2] and counts["image_errors"] == 0


def test_one_reader_last_row_wins_and_ids_are_normalised(tmp_path):
    """The reader resume and scoring share: the last row of an id wins, as the official scripts' dicts keep it (the
    issue-24 policy; it was the first before), an error row never replaces an answer, "7" is 7."""
    lines = [
        {"question_id": "7", "answer": "first"},
        {"question_id": 7, "answer": "second"},
        {"question_id": 8, "answer": "", "error": "OSError: x"},
        {"question_id": "8", "answer": "retried"},
        {"question_id": 8, "answer": "", "error": "OSError: later"},
        {"question_id": 9, "text": "llava key"},
        {"question_id": True, "answer": "bad id"},
        {"answer": "no id"},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in lines) + '{"question_id": 10, "ans')
    rows, stats = read_predictions(path)
    assert {k: r["answer"] for k, r in rows.items()} == {7: "second", 8: "retried", 9: "llava key"}
    assert (stats["duplicate_ids"], stats["malformed_rows"], stats["image_errors"]) == (3, 3, 0)
    (tmp_path / "p.json").write_text(json.dumps(lines[:2]))
    assert read_predictions(tmp_path / "p.json")[0][7]["answer"] == "second"
    assert read_predictions(tmp_path / "absent.jsonl")[0] == {}


def test_resume_refuses_answers_made_differently(llava, tmp_path):
    out = tmp_path / "predictions.jsonl"
    generate_answers(llava[0], _requests(), out, _cfg(batch_size=5, max_batches=1), signature={"template": "vicuna_v1"})
    meta = json.loads(signature_path(out).read_text())
    assert signature_path(out).name == "predictions.meta.json" and meta["template"] == "vicuna_v1"
    assert meta["max_new_tokens"] == [4, 12] and meta["dtype"] == "fp32" and "batch_size" not in meta
    for cfg, signature, field in [
        (_cfg(max_new_tokens=8), {"template": "vicuna_v1"}, "max_new_tokens"),
        (_cfg(dtype="bf16"), {"template": "vicuna_v1"}, "dtype"),
        (_cfg(), {"template": "plain"}, "template"),
    ]:
        with pytest.raises(UserError, match=f"predictions.meta.json: .*made with {field}=.*new --out") as info:
            generate_answers(llava[0], _requests(), out, cfg, signature=signature)
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="made with model="):
        generate_answers(tmp_path / "other_model", _requests(), out, _cfg(), signature={"template": "vicuna_v1"})
    assert len(read_predictions(out)[0]) == 5  # nothing was appended by the refused runs
    _, stats = generate_answers(llava[0], _requests(), out, _cfg(batch_size=2), signature={"template": "vicuna_v1"})
    assert stats.resumed == 5
    out.unlink()  # deleting the predictions starts over, whatever the old signature said
    generate_answers(llava[0], _requests()[:2], out, _cfg(max_new_tokens=3))
    assert json.loads(signature_path(out).read_text())["max_new_tokens"] == 3


def test_a_dir_that_is_not_a_llava_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a LLaVA config"):
        generate_answers(tmp_path / "empty", _requests()[:2], tmp_path / "p.jsonl", _cfg())


def test_bad_requests_and_missing_vllm(llava, tmp_path):
    with pytest.raises(ValueError, match="no image loader"):
        generate_answers(llava[0], [Request(0, "<image>\nq", None)], tmp_path / "a.jsonl", _cfg())
    with pytest.raises(ValueError, match="duplicate"):
        generate_answers(llava[0], [Request(0, "q", None), Request(0, "r", None)], tmp_path / "b.jsonl", _cfg())
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs the vllm package"):
            generate_answers(llava[0], _requests(), tmp_path / "c.jsonl", _cfg(backend="vllm"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, model_dir: str, out: str) -> None:
    """One torchrun-like rank: the group is joined from env inside generate_answers."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ["WORLD_SIZE"] = "2"
    torch.set_num_threads(1)
    answers, _ = generate_answers(model_dir, _requests(), out, _cfg(batch_size=3))
    with open(f"{out}.result{rank}", "w") as f:
        json.dump({str(k): v for k, v in answers.items()}, f)


def test_two_gloo_ranks_merge_to_the_single_process_answers(llava, tmp_path):
    out = tmp_path / "predictions.jsonl"
    mp.spawn(_worker, args=(_free_port(), str(llava[0]), str(out)), nprocs=2, join=True)
    ref = {str(k): v for k, v in _reference_answers(llava).items()}
    assert json.loads((tmp_path / "predictions.jsonl.result0").read_text()) == ref
    assert json.loads((tmp_path / "predictions.jsonl.result1").read_text()) == {}
    assert not list(tmp_path.glob("predictions.jsonl.rank*"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["question_id"] for row in rows) == list(range(N))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cuda_batched_matches_one_by_one(llava, tmp_path, dtype):
    """fp32 on CUDA is exact; bf16 (padding changes reduction shapes) must agree on nearly every answer."""
    model, processor = load_model(llava[0], torch.device("cuda"), torch.float32 if dtype == "fp32" else torch.bfloat16)
    ref = {r.id: generate_one_by_one(model, processor, r, r.max_new_tokens or 12) for r in _requests()}
    answers, _ = generate_answers(llava[0], _requests(), tmp_path / "p.jsonl", _cfg(device="cuda", dtype=dtype))
    agree = sum(answers[k] == v for k, v in ref.items())
    assert agree == N if dtype == "fp32" else agree >= N - 2
