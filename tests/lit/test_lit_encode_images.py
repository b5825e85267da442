"""LiT's evaluators encode images through `pretrain.features` (DataLoader workers): same embeddings as the model,
unreadable images skipped and counted."""

from __future__ import annotations

import torch
from lit_fixtures import tiny_encoder

from lit.model import TextTowerConfig, build_lit_model
from lit.zeroshot import encode_images
from pretrain.data.synthetic import make_sample
from pretrain.encoder import build_preprocess
from pretrain.labels import LabelConfig


def test_encode_images_matches_the_model_and_counts_skips(tmp_path):
    torch.manual_seed(0)
    model = build_lit_model(tiny_encoder(tmp_path / "enc"), TextTowerConfig(preset="text_tiny"), LabelConfig()).eval()
    images = [make_sample(i, seed=1, image_size=40).image for i in range(3)]
    images[2].save(tmp_path / "2.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    items = [images[0], str(tmp_path / "gone.png"), images[1], str(tmp_path / "bad.png"), str(tmp_path / "2.png")]
    feats, kept, skipped = encode_images(model, items, batch_size=2, num_workers=1)
    assert kept == [0, 2, 4] and skipped == {"missing": 1, "undecodable": 1}
    preprocess = build_preprocess(model.encoder_config["preprocessing"])  # the encoder's eval transform
    pixels = torch.stack([preprocess(im) for im in images])
    with torch.no_grad():
        want = model.encode_image(pixels)
    torch.testing.assert_close(feats, want, rtol=1e-5, atol=1e-5)
    empty, none_kept, _ = encode_images(model, [str(tmp_path / "gone.png")])
    assert empty.shape == (0, model.embed_dim) and none_kept == []
