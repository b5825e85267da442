"""Caption tokenizers: CLIP BPE parity with OpenCLIP, a local HF tokenizer, word vocabularies, stopwords, errors."""

import pickle

import pytest
import torch

from pretrain.labels.khot import label_ids
from pretrain.labels.tokenizers import (
    ClipBPETokenizer,
    LabelConfig,
    WordTokenizer,
    build_tokenizer,
    build_word_vocab,
    load_word_vocab,
    remove_stopwords,
    save_word_vocab,
    stopword_set,
)
from pretrain.runtime.errors import ConfigError

CAPTIONS = ["A photo of a Dog!", "two red cubes on the left, one blue sphere", "the " * 120 + "end", ""]


@pytest.fixture(scope="module")
def clip_tok():
    return build_tokenizer(LabelConfig())


def test_clip_bpe_matches_open_clip(clip_tok):
    from open_clip.tokenizer import tokenize

    ids, lengths = clip_tok(CAPTIONS)
    assert ids.dtype == torch.long and ids.shape == (4, 77)
    assert torch.equal(ids, tokenize(CAPTIONS, context_length=77))
    assert lengths.tolist()[2:] == [77, 2]
    assert ids[2, -1] == 49407  # truncation keeps the end token, as OpenCLIP does
    assert (clip_tok.vocab_size, clip_tok.pad_id, clip_tok.special_ids) == (49408, 0, (49406, 49407))


def test_clip_bpe_short_context():
    tok = ClipBPETokenizer(context_length=4)
    ids, lengths = tok(["a very long caption indeed"])
    assert ids.tolist() == [[49406, 320, 1070, 49407]] and lengths.tolist() == [4]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["a red dog on the grass", "two blue cats", "the cat sat on a mat", "a green cube left of a sphere"]
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tk.train_from_iterator(corpus * 5, trainer)
    cls_id, sep_id = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    out = tmp_path_factory.mktemp("hf_wordpiece")
    fast.save_pretrained(out)
    return out


def test_hf_tokenizer_from_local_directory(hf_dir):
    from transformers import AutoTokenizer

    tok = build_tokenizer(LabelConfig(tokenizer="hf", tokenizer_path=str(hf_dir), context_length=6))
    ref = AutoTokenizer.from_pretrained(str(hf_dir))
    assert tok.pad_id == ref.pad_token_id == 0
    assert tok.special_ids == tuple(sorted(ref.all_special_ids)) and tok.vocab_size == len(ref)
    cls_id, sep_id = ref.cls_token_id, ref.sep_token_id
    ids, lengths = tok(["a red dog", "two blue cats on the grass left"])
    short = ref("a red dog")["input_ids"]
    assert ids[0, : len(short)].tolist() == short and lengths[0] == len(short)
    assert (ids[0, len(short) :] == tok.pad_id).all()
    assert lengths[1] == 6 and ids[1, 0] == cls_id and ids[1, 5] == sep_id  # truncated, end token kept
    sparse, valid = label_ids(ids, lengths, tok.special_ids, official=False)
    assert not set(sparse[valid].tolist()) & set(tok.special_ids)
    clone = pickle.loads(pickle.dumps(tok))
    assert torch.equal(clone(["a red dog"])[0], ids[:1])


def test_hf_missing_path_is_config_error(tmp_path):
    missing = tmp_path / "no_such_tokenizer"
    with pytest.raises(ConfigError, match="no_such_tokenizer"):
        build_tokenizer(LabelConfig(tokenizer="hf", tokenizer_path=str(missing)))
    with pytest.raises(ConfigError, match=r"^labels\.tokenizer_path: "):  # the recipe key, as users type it
        build_tokenizer(LabelConfig(tokenizer="hf", tokenizer_path=""))
    with pytest.raises(ConfigError, match=r"^labels\.context_length: "):
        build_tokenizer(LabelConfig(context_length=1))


def test_word_vocab_min_count_and_top_k(tmp_path):
    captions = ["Dog dog CAT", "dog's bowl, cat", "a bird"]
    assert build_word_vocab(captions, min_count=1, top_k=100) == ["cat", "dog", "a", "bird", "bowl", "dog's"]
    assert build_word_vocab(captions, min_count=2, top_k=100) == ["cat", "dog"]
    assert build_word_vocab(captions, min_count=1, top_k=3) == ["cat", "dog", "a"]
    assert "a" not in build_word_vocab(captions, stopwords=True)
    path = tmp_path / "vocab" / "words.txt"
    save_word_vocab(["cat", "dog"], path)
    assert path.read_text() == "cat\ndog\n" and load_word_vocab(path) == ["cat", "dog"]

    tok = build_tokenizer(LabelConfig(tokenizer="word", tokenizer_path=str(path), context_length=5))
    assert (tok.vocab_size, tok.pad_id, tok.special_ids) == (4, 0, (0, 1))
    ids, lengths = tok(["Cat and DOG", "dog dog dog dog dog dog dog"])
    assert ids.tolist() == [[2, 1, 3, 0, 0], [3, 3, 3, 3, 3]] and lengths.tolist() == [3, 5]
    sparse, valid = label_ids(ids, lengths, tok.special_ids, official=False)
    assert [sorted(sparse[i][valid[i]].tolist()) for i in range(2)] == [[2, 3], [3]]  # <unk> masked
    assert torch.equal(pickle.loads(pickle.dumps(tok))(["Cat and DOG"])[0], ids[:1])


def test_missing_or_bad_word_vocab_is_config_error(tmp_path):
    missing = tmp_path / "missing_vocab.txt"
    with pytest.raises(ConfigError, match="missing_vocab.txt"):
        build_tokenizer(LabelConfig(tokenizer="word", tokenizer_path=str(missing)))
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\ndog\ncat\n")
    with pytest.raises(ConfigError, match="dup.txt"):
        load_word_vocab(dup)
    with pytest.raises(ConfigError, match=r"^labels\.tokenizer_path: "):
        build_tokenizer(LabelConfig(tokenizer="word"))


def test_stopwords_removed_only_when_asked(clip_tok):
    words = stopword_set()
    assert 150 <= len(words) <= 180 and all(w == w.lower() for w in words)
    assert {"the", "a", "of", "on", "is", "don't"} <= words and not {"dog", "red", "two", "left"} & words
    assert remove_stopwords("The dog's bowl is ON the table, isn't it?") == "dog's bowl table, ?"

    caption = ["a photo of the dog on a red mat"]
    no_stop = build_tokenizer(LabelConfig(stopwords=True))
    kept, _ = clip_tok(caption)
    removed, lengths = no_stop(caption)
    assert torch.equal(removed, clip_tok(["photo dog red mat"])[0]) and lengths.tolist() == [6]
    assert {320, 518, 539} <= set(kept[0].tolist())  # "a", "the", "of" are labels by default
    assert no_stop.name != clip_tok.name

    word_tok = WordTokenizer(["dog", "the"], stopwords=True)
    assert word_tok(["the dog"])[0][0, :2].tolist() == [2, 0]


def test_label_config_round_trips_through_yaml():
    from pretrain.runtime.config import from_dict, to_dict

    cfg = LabelConfig(tokenizer="word", tokenizer_path="v.txt", mode="official", stopwords=True)
    assert from_dict(LabelConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="mode"):
        from_dict(LabelConfig, {"mode": "sloppy"})


def test_clip_bpe_pickles_small(clip_tok):
    blob = pickle.dumps(clip_tok)
    assert len(blob) < 10_000  # the BPE tables are rebuilt in the worker, not shipped
    assert torch.equal(pickle.loads(blob)(CAPTIONS)[0], clip_tok(CAPTIONS)[0])


def test_bpe_cache_is_bounded(monkeypatch, clip_tok):
    import pretrain.labels.tokenizers as tokenizers

    before = clip_tok(CAPTIONS)[0]
    monkeypatch.setattr(tokenizers, "_BPE_CACHE_LIMIT", 3)
    assert torch.equal(clip_tok(CAPTIONS)[0], before) and torch.equal(clip_tok(CAPTIONS)[0], before)
    assert len(clip_tok._backend.cache) < 20


def test_word_labels_from_the_synthetic_captions_vocabulary():
    from pretrain.data.synthetic import make_sample
    from pretrain.labels.tokenizers import LabelConfig, build_tokenizer

    tok = build_tokenizer(LabelConfig(tokenizer="word", tokenizer_path="synthetic"))
    assert 50 < tok.vocab_size < 100  # a small head instead of CLIP BPE's 49,408
    ids, _ = tok([make_sample(i, seed=5, image_size=8).caption for i in range(50)])
    assert (ids != tok.unk_id).all()  # held-out captions use only words the vocabulary has
