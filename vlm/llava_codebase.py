"""The LLaVA codebase's own checkpoint format (haotian-liu/LLaVA, on PyPI as `llava-torch`), written and read.

usage: superclass vlm export --model RUN/llava --to llava --out DIR/llava-v1.5-7b-superclass
       superclass vlm import --model liuhaotian/llava-v1.5-7b --from llava --out HF_DIR

A checkpoint of that format is a `LlavaLlamaForCausalLM` (model_type `llava_llama`):
- config.json: the LLaMA config plus `mm_vision_tower` (a CLIP tower: hub name or folder), `mm_projector_type`
  (`mlp2x_gelu`), `mm_hidden_size`, `mm_vision_select_layer` (-2), `mm_vision_select_feature` (`patch`),
  `image_aspect_ratio` (`pad`), `mm_use_im_start_end` / `mm_use_im_patch_token` (false: `load_pretrained_model`
  adds an `<im_patch>` token when the key is missing), `tokenizer_padding_side`, `tokenizer_model_max_length`;
- weights: LLaMA's own names (`model.embed_tokens`, `model.layers.*`, `model.norm`, `lm_head`) and the projector's
  (`model.mm_projector.0.*`, `model.mm_projector.2.*`); no tower: `load_pretrained_model` loads it from
  `mm_vision_tower` (a tower in the weights, `model.vision_tower.vision_tower.*`, is read on import);
- tokenizer: LLaMA's SentencePiece `tokenizer.model` (LLaVA loads it with `use_fast=False`), pad = `<unk>`; the
  image is the id -200 that `tokenizer_image_token` splices in, never a vocabulary entry.
Stage 1 of that codebase writes only `mm_projector.bin` (the `model.mm_projector.*` tensors), which its
`--pretrain_mm_mlp_adapter` reads; `write_projector_bin` / `read_projector_bin` are that hand-off.

Export puts the tower in `DIR/vision_tower` (an HF `CLIPVisionModel` folder) and writes its absolute path in
`mm_vision_tower`: LLaVA's `build_vision_tower` accepts only an existing path or an openai/laion hub name, and it
resolves a relative path against the working directory. Move DIR and export again (or edit that key). The rows we
added for `<image>` / `<pad>` (and the padding to a multiple of 64) are dropped: the vocabulary is the LLM's own.
LLaVA's `load_pretrained_model(DIR, None, name)` picks the LLaVA class only when `name` contains "llava".
Import is the reverse: the tower comes from `mm_vision_tower` (a folder, or the hub) or `vision_tower=`;
`<image>` / `<pad>` are added as `vlm build` adds them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from pretrain.exports.common import from_pretrained_complete, read_json, write_export
from pretrain.exports.hf import write_clip_vision_dir
from pretrain.runtime.atomic import write_file_atomically
from pretrain.runtime.checkpoint import read_weights
from pretrain.runtime.errors import UserError
from vlm.assemble import PAD_TOKEN, add_llava_tokens, assemble_llava, looks_like_path
from vlm.llava_dir import load_llava, save_llava
from vlm.llava_hf_form import _legacy_config, _legacy_tokenizer, save_sharded
from vlm.model_config import SELECT_STRATEGY
from vlm.processor import CLIP_IMAGE_KEYS, llava_processor
from vlm.templates import IMAGE_TOKEN
from vlm.tokenizer_files import SENTENCEPIECE_FILE, tokenizer_legacy

LLAVA_ARCH = "LlavaLlamaForCausalLM"
LLAVA_MODEL_TYPE = "llava_llama"
PROJECTOR_FILE = "mm_projector.bin"
TOWER_DIR = "vision_tower"
CLIP_TYPES = ("clip_vision_model", "clip")  # what CLIPVisionModel.from_pretrained reads (a CLIPModel: its tower)
MAX_LENGTH = 2048  # LLaVA-1.5's model_max_length
_PROJECTOR = {"linear_1": "0", "linear_2": "2"}  # HF LlavaMultiModalProjector -> LLaVA's nn.Sequential indices
_OURS = "model.multi_modal_projector."
_THEIRS = "model.mm_projector."
_FEATURE = {strategy: feature for feature, strategy in SELECT_STRATEGY.items()}  # HF -> mm_vision_select_feature
_TOWER_IN_WEIGHTS = "model.vision_tower.vision_tower."  # LLaVA's CLIPVisionTower.vision_tower (a CLIPVisionModel)
# config keys of LLaVA's own (`llava/train/train.py` ModelArguments / DataArguments stored on the config)
_LLAVA_KEYS = (
    "mm_vision_tower", "mm_projector_type", "mm_hidden_size", "mm_vision_select_layer", "mm_vision_select_feature",
    "mm_use_im_start_end", "mm_use_im_patch_token", "mm_patch_merge_type", "mm_projector_lr", "use_mm_proj",
    "image_aspect_ratio", "image_grid_pinpoints", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
    "tokenizer_padding_side", "tokenizer_model_max_length", "unfreeze_mm_vision_tower", "superclass_vlm",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- names
def llava_name(key: str) -> str | None:
    """Our `LlavaForConditionalGeneration` parameter name -> its LLaVA-codebase name; None for the tower's."""
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model.") :]
    if key.startswith("lm_head."):
        return key
    if key.startswith(_OURS):
        layer, rest = key[len(_OURS) :].split(".", 1)
        return f"{_THEIRS}{_PROJECTOR[layer]}.{rest}"
    if key.startswith("model.vision_tower."):
        return None
    raise KeyError(f"{key!r} is not a LlavaForConditionalGeneration parameter name")


def projector_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The projector's tensors of our state dict under LLaVA's names (what `mm_projector.bin` holds)."""
    return {llava_name(k): v for k, v in state.items() if k.startswith(_OURS)}


def write_projector_bin(state: dict[str, torch.Tensor], path: Path) -> Path:
    """LLaVA's stage-1 output `mm_projector.bin` (a torch pickle of tensors only) from our state dict, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in projector_state(state).items()}
    return write_file_atomically(path, lambda tmp: torch.save(tensors, tmp))


def read_projector_bin(path: str | Path) -> dict[str, torch.Tensor]:
    """Our projector tensors (`model.multi_modal_projector.linear_{1,2}.*`) from a LLaVA `mm_projector.bin`.

    LLaVA's `get_w(weights, 'mm_projector')` keeps every key containing `mm_projector.`: so do we (its stage 1
    saves `model.mm_projector.*`; DeepSpeed wrappers may add a prefix). Read with weights_only=True.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing (expected LLaVA's stage-1 mm_projector.bin)")
    state = read_weights(path)
    found: dict[str, torch.Tensor] = {}
    for key, value in state.items() if isinstance(state, dict) else []:
        if "mm_projector." in key and isinstance(value, torch.Tensor):
            index, rest = key.split("mm_projector.", 1)[1].split(".", 1)
            layer = {v: k for k, v in _PROJECTOR.items()}.get(index)
            if layer is None:
                raise UserError(f"{path}: {key!r} is not an mlp2x_gelu projector tensor (expected indices 0 and 2)")
            found[f"{_OURS}{layer}.{rest}"] = value
    want = {f"{_OURS}{layer}.{p}" for layer in _PROJECTOR for p in ("weight", "bias")}
    if set(found) != want:
        raise UserError(f"{path}: expected the mlp2x_gelu projector's {sorted(want)}, found {sorted(found) or 'none'}")
    return found


# ----------------------------------------------------------------------------------------------- export
def export_llava_codebase(model_dir: str | Path, out: str | Path) -> Path:
    """Write the HF LLaVA directory `model_dir` in the LLaVA codebase's format to `out` (atomically)."""
    model, processor = load_llava(model_dir)
    final = Path(out).absolute()

    def write(tmp: Path) -> None:
        _write_llava_codebase(model, processor, Path(model_dir), tmp, final)

    return write_export(out, write, is_llava_codebase_dir)


def is_llava_codebase_dir(path: Path) -> bool:
    """Whether `path` holds a LLaVA-codebase config.json (what a guarded overwrite accepts)."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and (
        cfg.get("model_type") == LLAVA_MODEL_TYPE or LLAVA_ARCH in cfg.get("architectures", [])
    )


def _write_llava_codebase(model: Any, processor: Any, source: Path, tmp: Path, final: Path) -> None:
    tokenizer = processor.tokenizer
    vocab = own_vocab_size(tokenizer)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        name = llava_name(key)
        if name is not None:
            state[name] = value[:vocab] if name in ("model.embed_tokens.weight", "lm_head.weight") else value
    save_sharded(state, tmp)
    (tmp / "config.json").write_text(json.dumps(_llava_config(model, processor, vocab, final), indent=2) + "\n")
    _write_generation_config(tokenizer, tmp)
    _write_tokenizer(tokenizer, source, tmp, vocab)
    tower = model.model.vision_tower
    tower_config = tower.config
    tower_config.architectures = ["CLIPVisionModel"]
    write_dir = tmp / TOWER_DIR
    write_dir.mkdir()
    write_clip_vision_dir(write_dir, tower_config, dict(tower.state_dict()), _clip_image_processor(processor))


def own_vocab_size(tokenizer: Any) -> int:
    """The LLM's vocabulary without the `<image>` / `<pad>` we appended (ids at the end, as `vlm build` adds them)."""
    size = len(tokenizer)
    ours = {tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, PAD_TOKEN) if t in tokenizer.get_vocab()}
    while size - 1 in ours:
        size -= 1
    return size


def _llava_config(model: Any, processor: Any, vocab: int, final: Path) -> dict[str, Any]:
    """LLaVA-1.5's config.json: the LLaMA config (4.x keys) and the mm_* keys `LlavaLlamaForCausalLM` reads."""
    config, tokenizer = model.config, processor.tokenizer
    text = _legacy_config(config.text_config.to_dict())
    pad = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    aspect = getattr(config, "image_aspect_ratio", None) or ("pad" if processor.image_processor.do_pad else "square")
    text.update(
        architectures=[LLAVA_ARCH], model_type=LLAVA_MODEL_TYPE, vocab_size=vocab, pad_token_id=pad,
        torch_dtype=str(model.dtype).removeprefix("torch."), use_cache=True,
        mm_vision_tower=str(final / TOWER_DIR), mm_projector_type="mlp2x_gelu",
        mm_hidden_size=config.vision_config.hidden_size, mm_vision_select_layer=config.vision_feature_layer,
        mm_vision_select_feature=_FEATURE[config.vision_feature_select_strategy], mm_patch_merge_type="flat",
        mm_use_im_start_end=False, mm_use_im_patch_token=False, mm_projector_lr=None, use_mm_proj=True,
        image_aspect_ratio="pad" if aspect == "pad" else "square", image_grid_pinpoints=None,
        tune_mm_mlp_adapter=False, freeze_mm_mlp_adapter=False, tokenizer_padding_side="right",
        tokenizer_model_max_length=MAX_LENGTH, superclass_vlm=getattr(config, "superclass_vlm", None),
    )  # fmt: skip
    text.pop("dtype", None)
    return text


def _write_generation_config(tokenizer: Any, out: Path) -> None:
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    ids["pad_token_id"] = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    (out / "generation_config.json").write_text(json.dumps(ids, indent=2) + "\n")


def _write_tokenizer(tokenizer: Any, source: Path, out: Path, vocab: int) -> None:
    """LLaVA's tokenizer files: the SentencePiece model + a slow `LlamaTokenizer` config (pad = `<unk>`), or, for a
    tokenizer.json-only LLM, that file without the tokens the vocabulary trim dropped."""
    sp_model = source / SENTENCEPIECE_FILE
    special = {"bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "unk_token": tokenizer.unk_token}
    special["pad_token"] = tokenizer.unk_token
    if sp_model.is_file():
        shutil.copyfile(sp_model, out / SENTENCEPIECE_FILE)
        config = {
            "tokenizer_class": "LlamaTokenizer", "legacy": tokenizer_legacy(tokenizer) is not False,
            "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": MAX_LENGTH, "padding_side": "right", "sp_model_kwargs": {}, **special,
        }  # fmt: skip
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
        return
    tokenizer.save_pretrained(out)
    tok_file = out / "tokenizer.json"
    data = json.loads(tok_file.read_text())
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < vocab]
    data["model"] = merges_as_strings(data.get("model") or {})
    tok_file.write_text(json.dumps(data, ensure_ascii=False) + "\n")
    cfg_file = out / "tokenizer_config.json"
    config = _legacy_tokenizer(json.loads(cfg_file.read_text()))
    kept = {t["content"] for t in data["added_tokens"]}
    config["additional_special_tokens"] = [t for t in config.get("additional_special_tokens", []) if t in kept]
    config["added_tokens_decoder"] = {k: v for k, v in config.get("added_tokens_decoder", {}).items() if int(k) < vocab}
    config.update(special if PAD_TOKEN not in kept else {**special, "pad_token": PAD_TOKEN})
    config.pop("chat_template", None)
    cfg_file.write_text(json.dumps(config, indent=2) + "\n")


def merges_as_strings(model: dict[str, Any]) -> dict[str, Any]:
    """A BPE model with its merges as "a b" strings, the form every tokenizers release reads: 0.20 and later write
    ["a", "b"] pairs, which the LLaVA codebase's pinned tokenizers 0.15 refuses ("data did not match any variant of
    untagged enum ModelWrapper"). Pairs with a space inside a token have no string form and stay pairs."""
    merges = model.get("merges")
    if model.get("type") != "BPE" or not merges or not isinstance(merges[0], list):
        return model
    if any(" " in part for pair in merges for part in pair):
        return model
    return {**model, "merges": [" ".join(pair) for pair in merges]}


def _clip_image_processor(processor: Any) -> Any:
    """The tower's `CLIPImageProcessor` (resize + crop + normalise); LLaVA pads to square itself for "pad"."""
    from transformers import CLIPImageProcessor

    images = processor.image_processor
    return CLIPImageProcessor(**{k: getattr(images, k) for k in CLIP_IMAGE_KEYS})


# ----------------------------------------------------------------------------------------------- import
def import_llava_codebase(src: str | Path, out: str | Path, vision_tower: str = "") -> Path:
    """Write the LLaVA-codebase checkpoint `src` (a folder) as our HF LLaVA directory `out`; returns `out`."""
    model, processor = load_llava_codebase(src, vision_tower)
    return save_llava(model, processor, out)


def load_llava_codebase(src: str | Path, vision_tower: str = "") -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration, LlavaProcessor) holding the LLaVA-codebase checkpoint in folder `src`."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    src = _local_folder(src)
    cfg_file = src / "config.json"
    cfg = _check_llava_config(read_json(cfg_file), cfg_file)
    tower_name = vision_tower or cfg["mm_vision_tower"]
    where = "--vision-tower" if vision_tower else f"{cfg_file}: mm_vision_tower"
    try:
        check_clip_tower(tower_name, where)
        tower = from_pretrained_complete(CLIPVisionModel, tower_name, "CLIP vision tower")
        clip = CLIPImageProcessor.from_pretrained(tower_name)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{where} {tower_name!r} cannot be loaded as a CLIP tower ({first})") from None
    weights = read_llava_weights(src)
    text = {k: v for k, v in cfg.items() if k not in _LLAVA_KEYS and k not in ("architectures", "model_type")}
    dtype = _dtype(cfg.get("torch_dtype") or cfg.get("dtype"))
    with torch.device("meta"):
        lm = LlamaForCausalLM(LlamaConfig(**text))
    lm_state = {k: v for k, v in weights.items() if k.startswith(("model.", "lm_head.")) and "mm_projector" not in k}
    lm_state = {k: v for k, v in lm_state.items() if not k.startswith("model.vision_tower.")}
    _load_exactly(lm, lm_state, src, "LLaMA")
    lm.model.rotary_emb = type(lm.model.rotary_emb)(config=lm.config)  # a buffer, not in the weights
    lm = lm.to(dtype)
    tower_state = {k[len(_TOWER_IN_WEIGHTS) :]: v for k, v in weights.items() if k.startswith(_TOWER_IN_WEIGHTS)}
    if tower_state:  # a run that trained the tower saved it; LLaVA's from_pretrained then uses these weights
        tower.load_state_dict({k.removeprefix("vision_model."): v for k, v in tower_state.items()}, strict=True)
    tower = tower.to(dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError, ImportError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{src}: cannot load its tokenizer ({first})") from None
    add_llava_tokens(tokenizer, lm)
    aspect = "pad" if cfg.get("image_aspect_ratio") == "pad" else "crop"
    provenance = {"imported_from": str(src.absolute()), "format": "llava", "mm_vision_tower": tower_name}
    select = {"patch": "patch", "cls_patch": "cls_patch"}[cfg.get("mm_vision_select_feature", "patch")]
    model = assemble_llava(tower, lm, tokenizer, int(cfg["mm_vision_select_layer"]), select, aspect, provenance)
    projector = {k: v for k, v in weights.items() if k.startswith(_THEIRS)}
    model.model.multi_modal_projector.load_state_dict(
        {k.removeprefix("model.multi_modal_projector."): v.to(dtype) for k, v in _from_llava(projector).items()}
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), llava_processor(clip, tokenizer, model.config, aspect)


def check_clip_tower(name: str, where: str) -> None:
    """A one-line UserError when the config of `name` (folder or hub id) is not a CLIP or CLIP vision model: HF
    would load another model's folder into CLIPVisionModel with every weight newly initialised."""
    from transformers import PretrainedConfig

    model_type = PretrainedConfig.get_config_dict(name)[0].get("model_type")
    if model_type not in CLIP_TYPES:
        raise UserError(f"{where} {name!r}: not a CLIP vision tower (model_type {model_type})")


def _local_folder(src: str | Path) -> Path:
    """`src` as a local folder: a directory, or a hub id (`org/name`) fetched with huggingface_hub, as
    `from_pretrained` does for every other model here."""
    path = Path(src)
    if path.is_dir():
        return path
    if path.exists() or looks_like_path(str(src)):
        raise UserError(f"{src}: {'not a directory' if path.exists() else 'does not exist'} (expected a LLaVA folder)")
    from huggingface_hub import snapshot_download

    try:
        patterns = ["*.json", "*.safetensors", "*.bin", "*.model"]
        return Path(snapshot_download(str(src), allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, no access: one line naming it
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{src}: not a folder here and not fetched from the hub ({first})") from None


def read_llava_weights(src: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a LLaVA folder: safetensors shards, else `pytorch_model*.bin` (weights_only)."""
    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("pytorch_model*.bin"))
    if not files:
        raise UserError(f"{src}: no *.safetensors or pytorch_model*.bin weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        part = read_weights(file)
        if not isinstance(part, dict):
            raise UserError(f"{file}: expected a dict of tensors")
        state.update(part)
    return state


def _from_llava(projector: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    back = {v: k for k, v in _PROJECTOR.items()}
    out = {}
    for key, value in projector.items():
        index, rest = key[len(_THEIRS) :].split(".", 1)
        out[f"{_OURS}{back[index]}.{rest}"] = value
    return out


def _check_llava_config(cfg: dict[str, Any], cfg_file: Path) -> dict[str, Any]:
    """One-line UserErrors for a config this import cannot hold exactly."""
    problem = ""
    if cfg.get("model_type") != LLAVA_MODEL_TYPE and LLAVA_ARCH not in (cfg.get("architectures") or []):
        problem = f"model_type {cfg.get('model_type')!r}; expected '{LLAVA_MODEL_TYPE}' ({LLAVA_ARCH})"
    elif not cfg.get("mm_vision_tower"):
        problem = "no mm_vision_tower (a text-only checkpoint?)"
    elif cfg.get("mm_projector_type", "linear") != "mlp2x_gelu":
        problem = f"mm_projector_type {cfg.get('mm_projector_type')!r}; expected 'mlp2x_gelu' (LLaVA-1.5)"
    elif cfg.get("mm_use_im_start_end") or cfg.get("mm_use_im_patch_token"):
        problem = "mm_use_im_start_end / mm_use_im_patch_token set (LLaVA-1.5 sets both false)"
    elif cfg.get("mm_vision_select_feature", "patch") not in ("patch", "cls_patch"):
        problem = f"mm_vision_select_feature {cfg.get('mm_vision_select_feature')!r}; expected 'patch' or 'cls_patch'"
    elif cfg.get("image_aspect_ratio") == "anyres" or cfg.get("mm_patch_merge_type", "flat") != "flat":
        problem = "anyres / spatial patch merging are LLaVA-NeXT options (expected LLaVA-1.5's flat)"
    if problem:
        raise UserError(f"{cfg_file}: {problem}")
    return cfg


def _load_exactly(module: torch.nn.Module, state: dict[str, torch.Tensor], src: Path, what: str) -> None:
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise UserError(f"{src}: the {what} weights lack {len(missing)} tensors, e.g. {missing[:2]}")
    module.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)


def _dtype(name: Any) -> torch.dtype:
    value = getattr(torch, str(name).removeprefix("torch."), None) if name else None
    return value if isinstance(value, torch.dtype) else torch.float32
