"""Data: speech units and alignments, corpora as flat arrays, and the samplers that build training
sequences (speech-only, text-only, interleaved text-speech)."""
