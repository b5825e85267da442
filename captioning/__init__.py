"""ClipCap captioning: a mapping network from a frozen encoder into a frozen causal LM."""
