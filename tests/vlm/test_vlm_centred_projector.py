"""Centred projector training: the same function, a plain export, exact resume, and faster learning on offset
features."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from vlm_fixtures import llava_parts

from pretrain.runtime.config import resolve
from pretrain.runtime.errors import ConfigError
from vlm.assemble import build_llava
from vlm.centred_projector import CENTRE, CentredLinear, centre_projector, fold_centre, projector_inputs
from vlm.data import LlavaBatches, LlavaSamples
from vlm.llava_dir import load_llava
from vlm.model_config import VLMModelConfig
from vlm.processor import num_image_tokens, process_images
from vlm.recipes import get_recipe
from vlm.synthetic_llava import write_scene_text_llava
from vlm.task import LlavaTask
from vlm.train import train


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return llava_parts(tmp_path_factory.mktemp("centred"), 16)


def _model_and_batch(parts):
    torch.manual_seed(0)
    model, processor = build_llava(VLMModelConfig(encoder=str(parts["encoder"]), llm=str(parts["llm"])))
    samples = LlavaSamples.from_json(
        parts["data"], tokenizer=processor.tokenizer, template="vicuna_v1", max_length=512,
        num_image_tokens=num_image_tokens(model.config),
        image_transform=lambda im: process_images(processor, [im], pad=True)[0],
    )  # fmt: skip
    batch = next(iter(LlavaBatches(samples, 4, pad_token_id=processor.tokenizer.pad_token_id)))
    return model.eval(), processor, batch


def _logits(model, batch):
    with torch.no_grad():
        return model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits


def test_centring_keeps_the_function_and_the_export_is_a_plain_projector(parts, tmp_path):
    model, processor, batch = _model_and_batch(parts)
    before = _logits(model, batch)
    features = projector_inputs(model, batch["pixel_values"])
    centre = centre_projector(model, list(batch["pixel_values"]))
    torch.testing.assert_close(centre, features.mean(0))
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)  # same model, new coordinates
    task = LlavaTask(model, processor, 1)
    with torch.no_grad():  # move the centred layer's weights: the export must still compute what the task does
        for p in task.model.model.multi_modal_projector.linear_1.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    trained = _logits(task.model, batch)
    out = task.export_artifact(tmp_path, task.state_dict(), samples_seen=4)
    saved = load_file(str(out / "model.safetensors"))
    assert not any(k.endswith(CENTRE) for k in saved)
    exported, _ = load_llava(out)
    assert type(exported.model.multi_modal_projector.linear_1) is nn.Linear
    torch.testing.assert_close(_logits(exported, batch), trained, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="centred already"):
        centre_projector(model, list(batch["pixel_values"]))


def test_fold_centre_by_hand():
    layer = nn.Linear(3, 2)
    centred = CentredLinear(layer, torch.tensor([10.0, -4.0, 2.0]))
    x = torch.randn(5, 3)
    state = fold_centre({f"m.multi_modal_projector.linear_1.{k}": v for k, v in centred.state_dict().items()})
    assert set(state) == {"m.multi_modal_projector.linear_1.weight", "m.multi_modal_projector.linear_1.bias"}
    plain = nn.Linear(3, 2)
    plain.load_state_dict({k.split(".")[-1]: v for k, v in state.items()})
    torch.testing.assert_close(plain(x), layer(x))
    torch.testing.assert_close(centred(x), layer(x))


def test_adam_learns_the_varying_part_of_offset_features_when_centred():
    """Features = a shared offset of norm ~60 + a small varying part (the demo's SuperClass tower); a fresh layer
    fitting a linear readout of the varying part with AdamW goes far lower in centred coordinates (same draws)."""
    g = torch.Generator().manual_seed(0)
    offset = torch.randn(16, generator=g) * 15
    signal = torch.randn(512, 16, generator=g)
    target = signal @ torch.randn(16, 4, generator=g)
    losses = {}
    for name in ("plain", "centred"):
        torch.manual_seed(1)
        layer = nn.Linear(16, 4)
        if name == "centred":
            layer = CentredLinear(layer, offset, keep_function=False)
        opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.0)
        for _ in range(200):
            loss = nn.functional.mse_loss(layer(signal + offset), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[name] = loss.item()
    assert losses["centred"] < 0.1 * losses["plain"], losses


def _recipe(parts, out: Path, steps: int, resume: str = ""):
    overrides = [f"model.encoder={parts['encoder']}", f"model.llm={parts['llm']}", f"run.out_dir={out}",
                 f"run.steps={steps}", "run.save_every=2", "run.global_batch_size=4", "data.synthetic_samples=16",
                 "data.synthetic_image_size=32", "data.max_length=512", f"run.resume={resume}", "run.evals=[]",
                 "projector_centring=8"]  # fmt: skip
    return resolve(get_recipe("llava_tiny_stage2"), None, overrides)


def test_a_centred_run_exports_plain_weights_and_resumes_exactly(parts, tmp_path, capsys):
    straight = load_llava(train(_recipe(parts, tmp_path / "a", 4)))[0].state_dict()
    assert "projector centred on 8 images' mean feature" in capsys.readouterr().out
    train(_recipe(parts, tmp_path / "b", 2))
    resumed = load_llava(train(_recipe(parts, tmp_path / "b", 4, resume="latest")))[0].state_dict()
    assert straight.keys() == resumed.keys() and not any(k.endswith(CENTRE) for k in straight)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_centring_on_text_only_data_is_a_one_line_error(parts, tmp_path):
    text = write_scene_text_llava(tmp_path / "text", 8, seed=1)
    recipe = resolve(_recipe(parts, tmp_path / "run", 2), None, ["data.kind=llava_json", f"data.json={text}"])
    with pytest.raises(ConfigError, match="projector_centring: the data has no readable image"):
        train(recipe)
