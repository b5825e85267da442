"""The one training runtime every trainer shares: config, distributed setup, loop, checkpoints, metrics."""
