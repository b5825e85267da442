"""Captions -> SuperClass labels: tokenizers, sparse/dense K-hot targets, IDF weights, and the losses.

tok = build_tokenizer(LabelConfig())                 # picklable; runs in DataLoader workers
ids, lengths = tok(captions)                         # [N, 77], [N]
labels, valid = label_ids(ids, lengths, tok.special_ids, official=False)
weights = idf(labels, valid)                         # IDFWeights: online update + weights [V]
loss = superclass_loss(logits, labels, valid, weights, LossConfig())
"""

from pretrain.labels.idf import IDFConfig, IDFCounts, IDFWeights, compute_idf_counts, load_idf_counts, save_idf_counts
from pretrain.labels.khot import count_labels, khot, label_ids, label_mask
from pretrain.labels.losses import LossConfig, clip_loss, superclass_loss
from pretrain.labels.tokenizers import (
    CaptionTokenizer,
    ClipBPETokenizer,
    HFTokenizer,
    LabelConfig,
    WordTokenizer,
    build_tokenizer,
    build_word_vocab,
    load_word_vocab,
    remove_stopwords,
    save_word_vocab,
)

__all__ = [
    "CaptionTokenizer",
    "ClipBPETokenizer",
    "HFTokenizer",
    "IDFConfig",
    "IDFCounts",
    "IDFWeights",
    "LabelConfig",
    "LossConfig",
    "WordTokenizer",
    "build_tokenizer",
    "build_word_vocab",
    "clip_loss",
    "compute_idf_counts",
    "count_labels",
    "khot",
    "label_ids",
    "label_mask",
    "load_idf_counts",
    "load_word_vocab",
    "remove_stopwords",
    "save_idf_counts",
    "save_word_vocab",
    "superclass_loss",
]
