"""The built-in benchmarks: importing this package registers each one (`eval.vlm.registry`).

The `llava15` suite runs them in the order of the SuperClass paper's Table 11 (VQAv2, GQA, VizWiz, ScienceQA, POPE,
MMMU, TextVQA, MMBench), then LLaVA-1.5's extra MME and SEED-Bench. Published numbers: `superclass_table11` is
SuperClass's row of Table 11 (arXiv 2411.03313), `llava15_7b` LLaVA-1.5-7B's (the LLaVA README / MODEL_ZOO).
"""

from eval.vlm.benchmarks import gqa, mmbench, mme, mmmu, pope, scienceqa, seedbench, textvqa, vizwiz, vqav2
from eval.vlm.registry import SUITES

BUILT_IN = (vqav2, gqa, vizwiz, scienceqa, pope, mmmu, textvqa, mmbench, mme, seedbench)
SUITES["llava15"] = tuple(module.SPEC.name for module in BUILT_IN)
