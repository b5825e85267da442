"""Frozen-feature probes and VLM benchmarks over encoder artifacts and HF LLaVA directories."""
