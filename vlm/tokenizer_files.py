"""The tokenizer files transformers 5 leaves out of a saved LLaMA tokenizer, put back on every save and export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SENTENCEPIECE_FILE = "tokenizer.model"


def keep_tokenizer_files(tokenizer: Any, out: Path) -> None:
    """What transformers 5 leaves out of a saved LLaMA tokenizer: `tokenizer.model` (the LLaVA codebase reads it
    with `use_fast=False`; so does the LLaVA-codebase export) and the `legacy` flag, without which a reload of a
    legacy tokenizer drops the `▁` it puts after `</s>` and so tokenizes multi-turn text differently."""
    source = getattr(tokenizer, "vocab_file", None)
    if isinstance(source, str) and Path(source).is_file() and not (out / SENTENCEPIECE_FILE).exists():
        shutil.copyfile(source, out / SENTENCEPIECE_FILE)
    legacy, cfg_file = tokenizer_legacy(tokenizer), out / "tokenizer_config.json"
    if isinstance(legacy, bool) and cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        cfg["legacy"] = legacy
        cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def tokenizer_legacy(tokenizer: Any) -> bool | None:
    """A LLaMA tokenizer's `legacy` flag (the attribute, or the config it was loaded from); None if it has none."""
    legacy = getattr(tokenizer, "legacy", None)
    if not isinstance(legacy, bool):
        legacy = (getattr(tokenizer, "init_kwargs", None) or {}).get("legacy")
    return legacy if isinstance(legacy, bool) else None
