"""`superclass <package> <command> ...`: dispatch to each package's own CLI, plus `superclass demo`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# command word -> module whose `main(argv) -> int` handles it
COMMANDS = {
    "demo": ("superclass.demo.run", "the whole chain on synthetic data, on CPU, in minutes"),
    "pretrain": ("pretrain.cli", "SuperClass / CLIP pretraining, recipes, IDF counts, exports, shard tools"),
    "lit": ("lit.cli", "LiT: a text tower on a locked encoder; zero-shot classification and retrieval"),
    "captioning": ("captioning.cli", "ClipCap captioning: train a mapper, generate COCO results, score them"),
    "vlm": ("vlm.cli", "LLaVA-1.5 with any encoder: build, train, export, chat"),
    "eval": (
        "eval.cli",
        "frozen-feature probes (linear, few-shot) and VLM benchmarks (VQAv2, GQA, POPE, MMBench, ...; suites)",
    ),
}

ALIASES = {"caption": "captioning"}  # old command words that still work (not listed)

USAGE = (
    "usage: superclass {"
    + ",".join(COMMANDS)
    + "} ...\n\n"
    + "\n".join(f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items())
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    name, rest = ALIASES.get(args[0], args[0]), args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
