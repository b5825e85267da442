"""The (LLaVA JSON, image folder) a recipe trains on: `data.json` as given, or the synthetic scenes written once.

`data.kind=synthetic` writes `data.synthetic_samples` scenes for the recipe's stage under `run.out_dir/data`
(`vlm.synthetic_llava.write_synthetic_llava`); the CPU recipes llava_tiny_stage1/2 train on them.
"""

from __future__ import annotations

from pathlib import Path

from pretrain.runtime.distributed import barrier
from pretrain.runtime.errors import ConfigError
from vlm.recipes import VLMRecipe
from vlm.synthetic_llava import write_synthetic_llava


def synthetic_data(recipe: VLMRecipe, is_main: bool) -> tuple[Path, Path]:
    """(LLaVA JSON, image folder) of the synthetic scenes, written once under `<run>/data`."""
    d = recipe.data
    out = Path(recipe.run.out_dir) / "data" / f"stage{recipe.stage}"
    path = out / f"llava_stage{recipe.stage}.json"
    if is_main and not path.is_file():
        write_synthetic_llava(out, d.synthetic_samples, d.synthetic_seed, d.synthetic_image_size, recipe.stage)
    barrier()
    return path, out


def data_source(recipe: VLMRecipe, is_main: bool) -> tuple[Path, Path]:
    """(LLaVA JSON, image folder) that the recipe trains on."""
    if recipe.data.kind == "synthetic":
        return synthetic_data(recipe, is_main)
    if not recipe.data.json:
        raise ConfigError("data.json is empty: point it at a LLaVA JSON (e.g. llava_v1_5_mix665k.json)")
    json_path = Path(recipe.data.json)
    return json_path, Path(recipe.data.image_folder) if recipe.data.image_folder else json_path.parent
