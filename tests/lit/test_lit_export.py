"""The LiT model exported for OpenCLIP gives the same embeddings and logits in OpenCLIP's own model."""

from __future__ import annotations

import pytest
import torch
from lit_fixtures import tiny_encoder

from lit.cli import main
from lit.export import export_lit_open_clip, load_open_clip_lit
from lit.model import TextTowerConfig, build_lit_model, save_lit
from lit.zeroshot import zero_shot_classifier
from pretrain.labels import LabelConfig, build_tokenizer
from pretrain.runtime.errors import UserError

TEXT = TextTowerConfig(kind="scratch", preset="text_tiny")
LABELS = LabelConfig(context_length=16)


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_open_clip_export_gives_the_same_logits(tmp_path, pool):
    torch.manual_seed(0)
    model = build_lit_model(tiny_encoder(tmp_path / "enc", pool=pool), TEXT, LABELS, unlocked_groups=1).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
        for p in model.backbone.blocks[-1].parameters():  # an unlocked group that LiT changed must travel too
            p.add_(0.01 * torch.randn_like(p))
    lit_dir = save_lit(tmp_path / "lit", model, TEXT, LABELS)
    oc = load_open_clip_lit(export_lit_open_clip(lit_dir, tmp_path / "oc"))

    tokenizer = build_tokenizer(LABELS)
    images = torch.randn(5, 3, 32, 32)
    ids = tokenizer([f"a photo of a {c} shape" for c in ("red", "green", "blue")])[0]
    with torch.no_grad():
        classifier = zero_shot_classifier(
            model.encode_text, tokenizer, ["red", "green", "blue"], ["a photo of a {} shape"]
        )
        ours = 100 * model.encode_image(images) @ classifier
        theirs_img = oc.encode_image(images, normalize=True)
        theirs_txt = oc.encode_text(ids, normalize=True)
        torch.testing.assert_close(theirs_img, model.encode_image(images), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(theirs_txt, model.encode_text(ids), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(100 * theirs_img @ theirs_txt.T, ours, rtol=1e-4, atol=1e-3)
        image_logits, _ = oc.get_logits(images, ids)
        torch.testing.assert_close(image_logits, model.logit_scale.exp() * ours / 100, rtol=1e-4, atol=1e-4)


def test_export_refuses_a_non_lit_directory(tmp_path, capsys):
    with pytest.raises(UserError):
        export_lit_open_clip(tiny_encoder(tmp_path / "enc"), tmp_path / "oc")
    assert main(["export", "--model", str(tmp_path / "enc"), "--out", str(tmp_path / "oc")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
