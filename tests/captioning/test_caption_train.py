"""`caption train` on the shared loop with synthetic captions: exit 0 and a loadable captioner artifact."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))

from eval_fixtures import tiny_encoder  # noqa: E402

from captioning.cli import main  # noqa: E402
from captioning.task import load_captioner  # noqa: E402


def test_cli_train_tiny(tmp_path):
    enc = tiny_encoder(tmp_path / "enc")
    args = ["train", "--recipe", "clipcap_tiny", f"encoder={enc}", f"run.out_dir={tmp_path / 'run'}", "run.steps=3",
            "run.global_batch_size=8", "data.synthetic_samples=24", "run.log_every=1", "run.evals=[]"]  # fmt: skip
    assert main(args) == 0
    model, tokenizer, config = load_captioner(tmp_path / "run" / "captioner")
    assert config["feature_dim"] == model.mapper.net[0].in_features and tokenizer.eos_token_id is not None
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 3


def test_a_karpathy_file_on_the_synthetic_recipe_is_refused(tmp_path, capsys):
    """clipcap_tiny reads synthetic captions: data.karpathy alone would be ignored and the run would exit 0."""
    args = ["train", "--recipe", "clipcap_tiny", f"encoder={tmp_path / 'enc'}", f"run.out_dir={tmp_path / 'run'}"]
    assert main([*args, f"data.karpathy={tmp_path / 'dataset_coco.json'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data.karpathy: set to") and "data.kind 'synthetic' does not read it" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()
