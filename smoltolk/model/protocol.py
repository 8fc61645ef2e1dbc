"""What training, evaluation and generation need from a model, stated once.

Two model types implement it: :class:`~smoltolk.model.tslm.TextSpeechLM` (text and speech) and
:class:`~smoltolk.model.llama.LlamaLM` (a text LM, e.g. the text pretraining of ``smoltolk demo``). A text LM
has no speech vocabulary: its ``speech_vocab`` is None, and nothing that needs one (speech or interleaved
data, speech benchmarks, speech generation) accepts it. Both ``forward`` methods take the same arguments
(ids, modality, labels, documents, cache, ``logits=``, ``return_hidden_states``, ``return_head_inputs``) and
return an :class:`~smoltolk.model.outputs.LMOutput`, so callers never branch on the type to run a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from smoltolk.model.outputs import LMOutput


@dataclass(frozen=True)
class SpeechVocab:
    """A text-speech model's speech ids: the modality switch (a text id), the speech EOS and the unit count
    (units are 0..num_units-1 in the speech vocabulary, EOS = num_units)."""

    swt_id: int
    speech_eos_id: int
    num_units: int


@runtime_checkable
class TrainableLM(Protocol):
    """The training surface (``smoltolk train``): a loss from shifted targets, parameter groups, memory options,
    the one writer and reader of the model's checkpoint files."""

    speech_vocab: SpeechVocab | None

    def __call__(self, input_ids: Tensor, is_speech: Tensor, *, labels: Tensor, labels_is_speech: Tensor,
                 **options) -> LMOutput: ...

    def speech_parameters(self) -> dict[str, nn.Parameter]: ...

    def set_memory_options(self, checkpoint_layers: bool = False, loss_chunk: int | None = None) -> None: ...

    def scored_targets(self, labels: Tensor, labels_is_speech: Tensor | None, is_speech: Tensor | None
                       ) -> tuple[Tensor, Tensor, Tensor]: ...

    def write_files(self, directory: Path, state: dict[str, Tensor] | None = None) -> None: ...

    def state_from_files(self, state: dict[str, Tensor]) -> dict[str, Tensor]: ...
