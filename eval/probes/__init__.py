"""Frozen-feature probes of an encoder artifact: the linear probe and few-shot classification."""
