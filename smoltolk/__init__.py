"""smoltolk: text-speech language models with late fusion and multi-level fission (SmolTolk)."""

__version__ = "0.1.0"
