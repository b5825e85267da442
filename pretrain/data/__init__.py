"""Image-text data: webdataset shards, JSONL/CSV lists and procedural synthetic captions, streamed as
augmented, tokenised batches that resume exactly (`build_loader`)."""

from pretrain.data.lists import ImageTextList, read_list
from pretrain.data.resize import resize_shards
from pretrain.data.shards import SKIP_REASONS, braceexpand, expand_shards
from pretrain.data.stream import BatchLoader, BatchStream, DataConfig, build_loader
from pretrain.data.synthetic import SyntheticCaptions, SyntheticSample, make_sample, write_list, write_shards
from pretrain.data.transforms import TransformConfig, eval_transform, train_transform

__all__ = [
    "SKIP_REASONS",
    "BatchLoader",
    "BatchStream",
    "DataConfig",
    "ImageTextList",
    "SyntheticCaptions",
    "SyntheticSample",
    "TransformConfig",
    "braceexpand",
    "build_loader",
    "eval_transform",
    "expand_shards",
    "make_sample",
    "read_list",
    "resize_shards",
    "train_transform",
    "write_list",
    "write_shards",
]
