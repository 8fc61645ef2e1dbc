"""Models: the Llama-family backbone, the text-speech LM, their configs, caches and checkpoints."""

from smoltolk.model.cache import Cache
from smoltolk.model.config import ABLATIONS, BASELINE, BackboneConfig, ModelConfig, SpeechConfig
from smoltolk.model.hf import load_hf_backbone, load_tokenizer, save_hf_backbone
from smoltolk.model.llama import LlamaLM
from smoltolk.model.outputs import LMOutput
from smoltolk.model.tslm import TextSpeechLM, shift_targets

__all__ = [
    "ABLATIONS", "BASELINE", "BackboneConfig", "Cache", "LlamaLM", "ModelConfig", "SpeechConfig",
    "LMOutput", "TextSpeechLM", "load_hf_backbone", "load_tokenizer", "save_hf_backbone", "shift_targets",
]
