"""VLM benchmarks: one small file per benchmark on a shared base, their scoring, suites and CLI."""
