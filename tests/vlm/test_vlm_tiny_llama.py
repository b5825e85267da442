"""The tiny LLaMA: weights drawn at the fan-in scale by default (HF's 0.02 left it on a long plateau at width 64)."""

import pytest
from transformers import LlamaForCausalLM

from vlm.tiny_llama import build_tiny_llama

TEXTS = ["What colour is the circle? red", "Is there a blue square in the image? no"] * 20


@pytest.mark.parametrize("width,init_std,want", [(64, 0.0, 64**-0.5), (32, 0.0, 32**-0.5), (64, 0.02, 0.02)])
def test_weights_are_drawn_at_width_to_the_minus_half_unless_told(tmp_path, width, init_std, want):
    out = build_tiny_llama(TEXTS, tmp_path / "lm", width=width, layers=1, vocab=120, init_std=init_std)
    model = LlamaForCausalLM.from_pretrained(out)
    assert model.config.initializer_range == pytest.approx(want)
    for weight in (model.model.layers[0].self_attn.q_proj.weight, model.model.embed_tokens.weight):
        assert float(weight.detach().std()) == pytest.approx(want, rel=0.1)
