"""Weight files: safetensors reading (single or sharded), atomic directory writes, and loading
a state dict into a model built on the meta device (no wasted random init, never a pickle)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from smoltolk.errors import CheckpointError
from smoltolk.files import require_safetensors

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected a JSON file here)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); the file may be truncated or corrupted") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    return data


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


@contextmanager
def atomic_directory(target: str | Path, replaceable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target`` by renames.

    If anything fails, ``target`` is left exactly as it was and the temporary directory is
    removed. An existing non-empty ``target`` is replaced only if ``replaceable(target)`` says so
    (default: never), so a save can never delete a directory it did not write.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target}: exists and is a file, not a directory")
    if target.is_dir() and any(target.iterdir()) and not (replaceable is not None and replaceable(target)):
        raise CheckpointError(f"{target}: exists and holds files this save did not write; refusing to replace "
                              "it (choose an empty or new directory)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: a later run can tell a dead writer's leftovers from a live write
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is a normal directory
    try:
        yield tmp
        for f in tmp.iterdir():  # flush file contents before the rename makes them visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_LEFTOVER = re.compile(r"^\.(.+)\.(tmp|old)-(?:(\d+)-)?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_writes(folder: str | Path) -> list[Path]:
    """Remove the temporary directories that killed atomic writes left in ``folder`` (never one whose
    writer is still running); returns what was removed. A write killed between moving the old
    directory aside and moving the new one in leaves no target: the old one is put back."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir(), key=lambda p: ".old-" not in p.name):  # restores first
        m = _LEFTOVER.match(p.name)
        if not m or not p.is_dir() or (m.group(3) and _alive(int(m.group(3)))):
            continue
        target = folder / m.group(1)
        if m.group(2) == "old" and not target.exists():  # killed between its two renames: the old one is whole
            os.replace(p, target)
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def meta_build(builder: Callable[[], nn.Module]) -> nn.Module:
    """Build a model on the meta device (no memory, no init); fill it with :func:`load_into`."""
    with torch.device("meta"):
        return builder()
