"""LLaVA directories: the LLM handed from one LLaVA to another (`save_language_model`)."""

import pytest
import torch
from eval_fixtures import tiny_encoder
from transformers import AutoModelForCausalLM, AutoTokenizer
from vlm_fixtures import tiny_llm

from pretrain.runtime.errors import UserError
from vlm.assemble import build_llava
from vlm.llava_dir import load_llava, save_language_model, save_llava
from vlm.model_config import VLMModelConfig


def test_the_language_model_leaves_a_llava_whole_and_builds_the_next_one(tmp_path):
    encoder, other = tiny_encoder(tmp_path / "enc"), tiny_encoder(tmp_path / "other", seed=1)
    torch.manual_seed(0)
    model, processor = build_llava(VLMModelConfig(encoder=str(encoder), llm=str(tiny_llm(tmp_path / "lm"))))
    with torch.no_grad():  # as if tuned: no weight is left at its built value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    llava = save_llava(model, processor, tmp_path / "llava")
    lm_dir = save_language_model(llava, tmp_path / "tuned_lm")
    lm, tokenizer = AutoModelForCausalLM.from_pretrained(lm_dir), AutoTokenizer.from_pretrained(lm_dir)
    ids = tokenizer("USER: What colour is the circle? ASSISTANT: red", return_tensors="pt").input_ids
    loaded, _ = load_llava(llava)
    with torch.no_grad():
        assert torch.equal(lm(input_ids=ids).logits, loaded(input_ids=ids).logits)  # text in: the same LM
    assert tokenizer.convert_tokens_to_ids("<image>") == processor.tokenizer.convert_tokens_to_ids("<image>")
    rebuilt, _ = build_llava(VLMModelConfig(encoder=str(other), llm=str(lm_dir)))
    want = loaded.model.language_model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in rebuilt.model.language_model.state_dict().items())
    with pytest.raises(UserError, match="not a previous export"):
        save_language_model(llava, encoder)  # never over an encoder artifact
    assert save_language_model(llava, lm_dir) == lm_dir  # but over its own previous export
