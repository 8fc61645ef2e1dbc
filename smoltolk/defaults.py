"""Defaults stated once, importable without torch (the CLI's start-up reads them)."""

DEFAULT_NUM_UNITS = 500  # the paper's speech vocabulary: mHuBERT-base k-means units
