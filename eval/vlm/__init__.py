"""VLM benchmarks on an HF LLaVA directory: the shared core (ids, files, answers, generation), base and suites."""
