"""Locked-image text tuning (LiT): a text tower trained against a frozen encoder artifact."""
