"""Shared infrastructure for every stage: config, checkpoints, distributed, device/precision,
metrics and run folders. Imports nothing else from this repo."""
