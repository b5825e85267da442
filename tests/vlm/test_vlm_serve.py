"""`superclass vlm serve` in a real headless browser: Debian's chromium driven by Playwright, two tiny LLaVAs.

The page's greedy answers (first and second turn) equal `superclass vlm chat`'s; a text upload and an empty question
are messages on the page and the server goes on serving; the page asks nothing of any other host. The screenshot is
kept at $VLM_SERVE_SCREENSHOT when set, else at <pytest's tmp dir>/vlm_serve.png (the path is printed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from eval_fixtures import tiny_encoder
from PIL import Image
from vlm_fixtures import noise_image, tiny_llm

from pretrain.runtime.errors import UserError
from vlm.assemble import build_llava
from vlm.chat import chat, chat_prompt
from vlm.cli import main as vlm_main
from vlm.llava_dir import load_llava
from vlm.model_config import VLMModelConfig
from vlm.serve import check_host, check_question, load_models, provenance, read_upload, require_gradio
from vlm.single_answer import greedy_answer, stream_answer
from vlm.task import LlavaTask

REPO = Path(__file__).resolve().parents[2]
QUESTIONS = ("What colour is the circle?", "How many squares are there?")
MAX_NEW_TOKENS = 6
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _words_only(model: torch.nn.Module, tokenizer) -> None:
    """Let the random LM say only whole lower-case words (plain text, shown verbatim by the page's Markdown)."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(model.lm_head.weight.shape[0])))
    keep = torch.tensor([bool(re.fullmatch(r"Ġ[a-z]{2,}", token or "")) for token in vocab])
    with torch.no_grad():
        model.lm_head.weight[~keep] = 0
        model.lm_head.weight[keep] *= 50


def _trained_llava(root: Path, llm: Path, method: str, seed: int, samples_seen: int) -> Path:
    """A random LLaVA exported as training exports it (`LlavaTask.export_artifact`: the stage and samples seen)."""
    encoder = tiny_encoder(root / f"{method}_encoder", seed=seed)
    config = json.loads((encoder / "config.json").read_text())
    config["provenance"].update(method=method, samples_seen=1000 * (seed + 1))
    (encoder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(100 + seed)
    model, processor = build_llava(VLMModelConfig(encoder=str(encoder), llm=str(llm)))
    _words_only(model, processor.tokenizer)
    task = LlavaTask(model, processor, stage=2)
    return task.export_artifact(root / method, task.state_dict(), samples_seen=samples_seen)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("serve")
    llm = tiny_llm(root / "llm")
    models = [_trained_llava(root, llm, "superclass", 0, 64), _trained_llava(root, llm, "clip", 1, 128)]
    image = root / "scene.png"
    noise_image(48, 32, seed=3).save(image)
    return {"root": root, "models": models, "image": image}


def test_provenance_and_host_checks(served: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    info = provenance(served["models"][1])
    assert info == {"stage": 2, "samples_seen": 128, "encoder_method": "clip", "encoder_samples_seen": 2000}
    assert check_host("127.0.0.1", False) is None and check_host("localhost", False) is None
    with pytest.raises(UserError, match="--allow-remote"):
        check_host("0.0.0.0", False)
    assert "NO authentication" in check_host("0.0.0.0", True)
    assert vlm_main(["serve", "--model", str(served["models"][0]), "--host", "0.0.0.0"]) == 2
    with pytest.raises(UserError, match="expected 1 to 4"):
        load_models([str(served["models"][0])] * 5)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install -e '\.\[serve\]'"):
        require_gradio()


def test_bad_inputs_are_messages(served: dict) -> None:
    text = served["root"] / "notes.txt"
    text.write_text("not an image\n")
    with pytest.raises(UserError, match="upload 'notes.txt': not a readable image"):
        read_upload(text, "notes.txt")
    for size in [(10_000, 10_000), (16_000, 12_000)]:  # over PIL's warning level; over its error level
        bomb = served["root"] / "bomb.png"
        Image.new("1", size).save(bomb)  # zeros: a file of some KB, hundreds of MB once decoded as RGB
        with pytest.warns(Image.DecompressionBombWarning) if size[0] == 10_000 else nullcontext():
            with pytest.raises(UserError, match="upload 'bomb.png': .*too large to decode"):
                read_upload(bomb, "bomb.png")
    with pytest.raises(UserError, match="empty question"):
        check_question("  ", Image.new("RGB", (8, 8)))
    with pytest.raises(UserError, match="no image"):
        check_question("what?", None)


def test_stream_ends_on_the_greedy_answer(served: dict) -> None:
    model, processor = load_llava(served["models"][0])
    image, prompt = Image.open(served["image"]).convert("RGB"), chat_prompt([], QUESTIONS[0])
    texts = list(stream_answer(model, processor, prompt, image, MAX_NEW_TOKENS))
    assert len(texts) > 1 and all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # token by token
    assert texts[-1] == greedy_answer(model, processor, prompt, image, MAX_NEW_TOKENS)
    torch.manual_seed(0)
    assert list(stream_answer(model, processor, prompt, image, MAX_NEW_TOKENS, temperature=1.0, top_p=0.9))


def _browser():
    """(playwright module, chromium path), or a skip naming what is missing."""
    pytest.importorskip("gradio", reason="Gradio is missing: pip install -e '.[serve]'")
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: pip install -e '.[dev]'")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    return playwright, chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vlm serve exited {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"vlm serve did not answer at {url} within {seconds:.0f} s")


def test_two_models_in_a_browser(served: dict, tmp_path: Path) -> None:
    playwright, chromium = _browser()
    models, image = served["models"], served["image"]
    expected = [chat(m, image, lines=QUESTIONS, max_new_tokens=MAX_NEW_TOKENS, emit=lambda s: None) for m in models]
    assert all(len(replies) == 2 and all(replies) for replies in expected)
    assert expected[0] != expected[1]  # the columns cannot be swapped unnoticed
    notes = tmp_path / "notes.txt"
    notes.write_text("a text file, not an image\n")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "vlm", "serve", "--model", str(models[0]), "--model", str(models[1]),
           "--port", str(port), "--max-new-tokens", str(MAX_NEW_TOKENS)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outside: list[str] = []
    try:
        _wait_until_up(url, proc)
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 760})
            page.route("**/*", lambda route: _local_only(route, url, outside))
            page.goto(url)
            _check_page(playwright.expect, page, models, expected, image, notes)
            shot = Path(os.environ.get("VLM_SERVE_SCREENSHOT") or tmp_path / "vlm_serve.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")
            browser.close()
        assert proc.poll() is None, "the server stopped"
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[0]
    assert f"[vlm serve] http://127.0.0.1:{port} (2 models" in log and "authentication" not in log
    assert outside == [], f"the page asked other hosts: {outside}"


def _local_only(route, url: str, outside: list[str]) -> None:
    """Let the page reach the server; record and refuse anything else (Gradio must not phone home)."""
    if route.request.url.startswith(url):
        route.continue_()
    else:
        outside.append(route.request.url)
        route.abort()


def _check_page(expect, page, models: list[Path], expected: list[list[str]], image: Path, notes: Path) -> None:
    status, ask, question = page.locator("#status"), page.locator("#ask"), page.locator("#question textarea")
    for i, model in enumerate(models):
        header = page.locator(f"#model-{i}")
        expect(header).to_contain_text(str(model))
        expect(header).to_contain_text(f"encoder: {['superclass', 'clip'][i]}")
        expect(header).to_contain_text(f"LLaVA stage 2, {64 * (i + 1)} samples seen")
    upload = page.locator("#image input[type=file]")
    upload.set_input_files(str(notes))  # refused by the browser side of Gradio's image component, by its type
    toast = page.get_by_role("status").filter(has_text="Invalid file type: notes.txt. Only image/* allowed.")
    expect(toast).to_be_visible()
    toast.get_by_role("button", name="Close", exact=True).click()
    disguised = notes.with_name("notes.png")  # a text file named as an image: the server opens it and says so
    disguised.write_bytes(notes.read_bytes())
    upload.set_input_files(str(disguised))
    expect(status).to_contain_text("Error: upload 'notes.png': not a readable image")
    upload.set_input_files(str(image))
    expect(status).to_contain_text("scene.png: 48x32")
    ask.click()
    expect(status).to_contain_text("Error: empty question")
    for turn, text in enumerate(QUESTIONS):
        question.fill(text)
        ask.click()
        for i in range(len(models)):
            answers = page.locator(f"#answers-{i} [data-testid=bot]")
            expect(answers).to_have_count(turn + 1)
            expect(answers.nth(turn)).to_have_text(expected[i][turn])
        expect(status).to_have_text("")
