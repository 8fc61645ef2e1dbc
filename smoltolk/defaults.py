"""Defaults stated once, importable without torch (the CLI's start-up reads them)."""

DEFAULT_NUM_UNITS = 500  # the paper's speech vocabulary: mHuBERT-base k-means units
# the mini-world's carrier frames for held-out words (smoltolk.world.world.CARRIER_STYLES); the first is the default
CARRIER_STYLE_NAMES = ("plain", "echo", "neutral")
# the mini-world demo's models, in report order: recipes/demo/<name>.yaml
DEMO_MODELS = ("baseline", "smoltolk", "smoltolk-no-adapters")
