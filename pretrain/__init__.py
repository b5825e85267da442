"""Pretraining: SuperClass and CLIP encoders, the shared training runtime, and the encoder artifact."""
