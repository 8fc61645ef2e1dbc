"""Weight files: safetensors reading (single or sharded) and loading a state dict into a model built on
the meta device (no wasted random init, never a pickle). Atomic directory writes live in
:mod:`smoltolk.files` (data code uses them too) and are importable from here as before."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from smoltolk.errors import CheckpointError
from smoltolk.files import (  # noqa: F401  (atomic_directory, file_sha256, read_json: re-exported)
    atomic_directory,
    file_sha256,
    read_json,
    remove_stale_writes,
    require_safetensors,
)

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


def _load_safetensors_file(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: weight file missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: cannot read safetensors ({e}); the file may be truncated or corrupted") from None


_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}


def write_safetensors(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``tensors`` as a safetensors file whose bytes depend on the tensors and ``metadata`` only: tensors and
    metadata keys in sorted order (the safetensors library writes metadata in a hash map's order, which
    changes from run to run, so equal checkpoints would differ in bytes and content hashes). Not atomic
    (callers write into a temporary directory and rename it)."""
    import json
    import struct

    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    flat, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _DTYPE_NAMES:
            raise TypeError(f"{name}: dtype {t.dtype} has no safetensors name")
        data = t.reshape(-1).view(torch.uint8)
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + data.numel()]}
        flat.append(data)
        offset += data.numel()
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in flat:
            f.write(data.numpy().tobytes())


def read_weights(directory: str | Path) -> dict[str, Tensor]:
    """All tensors of ``directory/model.safetensors`` or of the shards its index names."""
    directory = Path(directory)
    require_safetensors(directory)
    single, index = directory / WEIGHTS, directory / WEIGHTS_INDEX
    if single.is_file():
        return _load_safetensors_file(single)
    # else the index (require_safetensors saw one of the two)
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: expected a non-empty 'weight_map' of tensor name -> shard file")
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        tensors = _load_safetensors_file(directory / shard)
        state.update({k: v for k, v in tensors.items() if weight_map.get(k) == shard})
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index}: tensors {missing[:5]} are listed but absent from their shards")
    return state


def load_into(model: nn.Module, state: dict[str, Tensor], source: str | Path,
              dtype: torch.dtype | None = None) -> None:
    """Copy ``state`` into ``model`` (which may live on the meta device); every parameter must be
    present with the right shape, and nothing unexpected may be left over."""
    expected = {k: v for k, v in model.state_dict().items()}
    tied = tied_names(model)
    missing = sorted(k for k in expected if k not in state and k not in tied)
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:6]}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
        raise CheckpointError(f"{source}: weights do not fit the model: " + "; ".join(parts))
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"{source}: tensor {k!r} has shape {tuple(v.shape)}, the model expects {tuple(expected[k].shape)}"
            )
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))
    if any(p.is_meta for p in model.parameters()):
        model.to_empty(device=device)
    full = dict(state)
    for alias, target in tied.items():
        full.setdefault(alias, state[target])
    model.load_state_dict(full, strict=True)
    for m in model.modules():
        if hasattr(m, "reset_buffers"):
            m.reset_buffers()
    retie(model)
    if dtype is not None:
        model.to(dtype)


def tied_names(model: nn.Module) -> dict[str, str]:
    """Parameter names that share storage with an earlier one: alias -> first name."""
    seen: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied[name] = seen[id(p)]
        else:
            seen[id(p)] = name
    return tied


def retie(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "tie_weights"):
            m.tie_weights()


def unique_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """State dict without tied aliases, contiguous, on CPU (what safetensors can store)."""
    tied = tied_names(model)
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k not in tied}


def meta_build(builder: Callable[[], nn.Module]) -> nn.Module:
    """Build a model on the meta device (no memory, no init); fill it with :func:`load_into`."""
    with torch.device("meta"):
        return builder()
