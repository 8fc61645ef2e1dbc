"""``smoltolk train``: the paper's two-stage recipe, one CPU process to many GPUs, exact resume.

Phases: :func:`setup` (process group, model, optimizer, samplers, resume) -> :func:`train_step`
(micro-batches, backward, clip, step) -> :func:`validate` -> :func:`save_checkpoint`, driven by
:func:`train`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from smoltolk.config import to_dict
from smoltolk.data.sampler import BatchSampler, DataConfig, Mixture
from smoltolk.errors import CheckpointError, ConfigError, Interrupted, Preempted, SmolTolkError
from smoltolk.model.tslm import TextSpeechLM, shift_targets
from smoltolk.train import checkpoint as ckpt
from smoltolk.train.config import ModelSpec, TrainConfig
from smoltolk.train.distributed import DistInfo, all_reduce_mean, cleanup, wrap
from smoltolk.train.distributed import setup as setup_distributed
from smoltolk.train.schedule import learning_rates, stage_of


class NonFiniteLossError(SmolTolkError, RuntimeError):
    """The loss became NaN or Inf."""


@dataclass
class Run:
    """Everything a training run holds."""

    cfg: TrainConfig
    info: DistInfo
    model: nn.Module  # unwrapped (what checkpoints save)
    wrapped: nn.Module  # DDP / FSDP / compiled view used for forward-backward
    optimizer: torch.optim.Optimizer
    samplers: dict[int, BatchSampler]  # per stage
    out: Path
    tokenizer_file: Path | None
    autocast: torch.dtype | None
    step: int = 0
    tokens: int = 0
    skipped: int = 0
    history: list[dict] = field(default_factory=list)
    val_items: list | None = None  # (task, items, eval config) of validation.eval, built in setup()
    frozen: bool | None = None  # the text parameters' requires_grad is off (stage 1), on, or not set yet


# ---------------------------------------------------------------------------------------- model
def build_model(cfg: TrainConfig) -> tuple[nn.Module, Path | None]:
    """The model to train and the tokenizer.json that goes with it (if any)."""
    spec = cfg.model
    model, tok = _build(spec)
    model.set_memory_options(cfg.run.activation_checkpointing, cfg.run.loss_chunk)
    if spec.tokenizer is not None:
        tok = Path(spec.tokenizer)
        if not tok.is_file():
            raise SmolTolkError(f"model.tokenizer: {tok} not found (expected a tokenizer.json)")
    return model, tok


def _build(spec: ModelSpec) -> tuple[nn.Module, Path | None]:
    from smoltolk.model.config import ModelConfig, SpeechConfig
    from smoltolk.model.hf import load_hf_backbone
    from smoltolk.model.llama import LlamaLM, init_weights
    from smoltolk.presets import preset

    tok = None
    if spec.backbone_dir:
        tok = Path(spec.backbone_dir) / "tokenizer.json"
        tok = tok if tok.is_file() else None
        backbone = load_hf_backbone(spec.backbone_dir)
        if spec.text_only:
            return backbone, tok
        return TextSpeechLM.from_backbone(backbone, spec.speech or SpeechConfig()), tok
    if spec.checkpoint:
        model = TextSpeechLM.from_pretrained(spec.checkpoint)
        tok = Path(spec.checkpoint) / "tokenizer.json"
        return model, tok if tok.is_file() else None
    base = preset(spec.preset) if spec.preset else ModelConfig(backbone=spec.backbone)
    model_cfg = ModelConfig(backbone=spec.backbone or base.backbone, speech=spec.speech or base.speech)
    if spec.text_only:
        lm = LlamaLM(model_cfg.backbone)
        init_weights(lm, 0.02)
        return lm, None
    return TextSpeechLM(model_cfg), None


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """speech / text x decay (>= 2-D tensors) / no decay, each group named for its schedule."""
    speech = model.speech_parameters()
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        kind = "speech" if name in speech else "text"
        groups.setdefault((kind, p.dim() >= 2), []).append(p)
    return [{"params": ps, "name": kind, "weight_decay": weight_decay if decay else 0.0}
            for (kind, decay), ps in sorted(groups.items())]


def _samplers(cfg: TrainConfig, model: nn.Module, info: DistInfo) -> dict[int, BatchSampler]:
    out = {}
    for stage, weights, steps in ((1, cfg.stage1_data, cfg.schedule.stage1_steps),
                                  (2, cfg.data.modality_weights, cfg.schedule.stage2_steps)):
        if steps == 0:
            continue
        data = dataclasses.replace(cfg.data, modality_weights=dict(weights), seed=cfg.data.seed + 1000 * stage)
        mixture = Mixture.for_model(data, model.speech_vocab)
        out[stage] = BatchSampler(mixture, cfg.schedule.micro_batch, info.rank, info.world_size,
                                  cfg.schedule.grad_accum)
    return out


def _check_tokenizer(cfg: TrainConfig, tokenizer: Path | None) -> None:
    """Text and interleaved data must have been prepared with the model's own tokenizer (index.json keeps
    its sha256): other token ids would train silently on the wrong words."""
    if tokenizer is None:
        return
    from smoltolk.model.io import file_sha256, read_json

    own = file_sha256(tokenizer)
    for ds in cfg.data.datasets + cfg.validation.datasets:
        if ds.modality == "speech":
            continue
        index = Path(ds.path) / "index.json"
        theirs = read_json(index).get("tokenizer_sha256") if index.is_file() else None
        if theirs is not None and theirs != own:
            raise ConfigError(f"{index}: prepared with another tokenizer (sha256 {theirs[:12]}...) than the model's "
                              f"{tokenizer} ({own[:12]}...); run smoltolk prepare again with --tokenizer {tokenizer}")


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    p = cfg.run.precision
    if p == "fp32":
        return None
    if p == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def setup(cfg: TrainConfig) -> Run:
    info = setup_distributed(cfg.run.device)
    torch.manual_seed(cfg.run.seed)  # every rank builds identical initial weights
    model, tok = build_model(cfg)
    model.to(info.device).train()
    autocast = _precision(cfg, info.device)
    context, world = cfg.data.context, info.world_size
    per_step = cfg.schedule.micro_batch * cfg.schedule.grad_accum * world * context
    if cfg.schedule.tokens_per_step is not None and cfg.schedule.tokens_per_step != per_step:
        raise SmolTolkError(f"schedule.tokens_per_step={cfg.schedule.tokens_per_step} but micro_batch x grad_accum x "
                            f"world ({world}) x context = {per_step}; adjust micro_batch or grad_accum")
    wrapped = wrap(model, cfg.run.distributed, info, bf16=autocast is not None)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                  betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    if cfg.run.compile:
        wrapped = torch.compile(wrapped)
    _check_tokenizer(cfg, tok)
    run = Run(cfg, info, model, wrapped, optimizer, _samplers(cfg, model, info), Path(cfg.run.out_dir), tok, autocast)
    if info.is_main:  # what killed checkpoint writes left behind (a live writer's folder is kept)
        from smoltolk.model.io import remove_stale_writes

        for p in remove_stale_writes(run.out / "checkpoints"):
            print(f"removed {p.name}, left by an interrupted checkpoint write", file=sys.stderr)
    resume(run)
    run.val_items = build_validation_benchmarks(run)  # errors in them before any training
    return run


# ---------------------------------------------------------------------------------------- steps
def _shifted(run: Run, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    dev = run.info.device
    batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
    docs = batch["doc_ids"] if run.cfg.data.mask_documents else None
    return shift_targets(batch["tokens"], batch["is_speech"], docs)


def count_targets(run: Run, shifted: dict[str, torch.Tensor]) -> torch.Tensor:
    """(all targets, speech targets) the loss of this micro-batch scores, counted before running the model."""
    text, speech, _ = run.model.scored_targets(shifted["labels"], shifted["labels_is_speech"], shifted["is_speech"])
    return torch.stack([text.sum() + speech.sum(), speech.sum()]).float()


def compute_loss(run: Run, batch: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(token-mean LM loss, entropy bonus or 0) of one micro-batch (tokens, is_speech, doc_ids: (B, T+1)) and
    detached statistics (per-modality CE sums and counts, the selector entropy summed over speech targets)."""
    shifted = batch if "labels" in batch else _shifted(run, batch)
    dev = run.info.device
    ctx = torch.autocast(dev.type, dtype=run.autocast) if run.autocast else contextlib.nullcontext()
    with ctx:
        out = run.wrapped(**shifted)  # both model types: an LMOutput with the loss (speech fields None for a text LM)
    stats = {"text_ce_sum": torch.nan_to_num(out.text_loss) * out.num_text, "n_text": out.num_text}
    if out.num_speech is not None:
        stats.update(speech_ce_sum=torch.nan_to_num(out.speech_loss) * out.num_speech, n_speech=out.num_speech)
    if out.entropy is not None:
        stats["entropy_sum"] = out.entropy * out.num_speech
    bonus = out.lm_loss - out.loss  # beta x entropy (0 without an entropy term)
    return out.lm_loss, bonus, {k: v.detach().float() for k, v in stats.items()}


def set_learning_rates(run: Run, step: int) -> dict[str, float]:
    rates = learning_rates(step, run.cfg.optim, run.cfg.schedule)
    for group in run.optimizer.param_groups:
        group["lr"] = rates[group["name"]]
    return rates


def set_stage(run: Run, stage: int) -> None:
    """Stage 1 trains the speech parameters only. Its text parameters (backbone, text embeddings) get
    ``requires_grad=False``: the backward pass computes no weight gradients for them (activations still
    flow back through the frozen backbone to the input adapter) and DDP reduces nothing for them, so
    DDP is wrapped again at each change. Under FSDP every parameter stays trainable (its sharded
    parameters are wrapped once) and the text gradients are dropped after the backward pass."""
    frozen = stage == 1
    if run.frozen == frozen:
        return
    run.frozen = frozen
    if run.info.distributed and run.cfg.run.distributed == "fsdp":
        return
    speech = {id(p) for p in run.model.speech_parameters().values()}
    for param in run.model.parameters():
        if id(param) not in speech:
            param.requires_grad_(not frozen)
    if run.info.distributed or run.cfg.run.compile:  # DDP's buckets and compiled graphs depend on requires_grad
        wrapped = wrap(run.model, run.cfg.run.distributed, run.info, bf16=run.autocast is not None)
        run.wrapped = torch.compile(wrapped) if run.cfg.run.compile else wrapped


def train_step(run: Run, step: int) -> dict:
    """One optimizer step: grad_accum micro-batches, backward, (stage 1: no text gradients), clip, step."""
    stage = stage_of(step, run.cfg.schedule)
    set_stage(run, stage)
    rates = set_learning_rates(run, step)
    sampler = run.samplers[stage]
    accum, world = run.cfg.schedule.grad_accum, run.info.world_size
    # The step's loss is the token-weighted mean over all its targets, on every rank and micro-batch
    # (so W ranks x B sequences equal one process with W x B): weight each micro-batch by its share.
    # The entropy bonus is likewise a mean over the step's speech targets (each micro-batch's bonus is its mean).
    batches = [_shifted(run, next(sampler)) for _ in range(accum)]
    counts = [count_targets(run, b) for b in batches]  # (all, speech) per micro-batch
    totals = _all_reduce_sum(torch.stack(counts).sum(0), run.info).clamp(min=1)
    loss = torch.zeros((), device=run.info.device)
    stats_sum = {}
    for micro, (batch, (n, n_speech)) in enumerate(zip(batches, counts, strict=True)):
        no_sync = getattr(run.wrapped, "no_sync", None)
        ctx = no_sync() if (no_sync is not None and micro < accum - 1) else contextlib.nullcontext()
        with ctx:
            lm, bonus, stats = compute_loss(run, batch)
            part = lm * (n / totals[0]) - bonus * (n_speech / totals[1])
            # DDP / FSDP average gradients over ranks: scale by world so the sum over ranks is kept
            (part * world).backward()
        loss += part.detach().float()
        for k, v in stats.items():
            stats_sum[k] = stats_sum.get(k, 0) + v
    loss = _all_reduce_sum(loss, run.info)
    if not torch.isfinite(loss):
        return {"step": step, "stage": stage, "loss": float(loss), "finite": False}
    if stage == 1:  # frozen backbone and text embeddings: no update, no optimizer state
        for group in run.optimizer.param_groups:  # (the optimizer holds the wrapped, e.g. sharded, parameters)
            if group["name"] == "text":
                for p in group["params"]:
                    p.grad = None
    trainable = [p for g in run.optimizer.param_groups for p in g["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, run.cfg.optim.grad_clip)
    if not torch.isfinite(grad_norm):  # a finite loss can still have inf/NaN gradients: never step on them
        return {"step": step, "stage": stage, "loss": float(loss), "grad_norm": float(grad_norm), "finite": False}
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    row = {"step": step + 1, "stage": stage, "loss": float(loss), "grad_norm": float(grad_norm),
           "lr_speech": rates["speech"], "lr_text": rates["text"], "finite": True}
    totals = {k: float(_all_reduce_sum(v, run.info)) for k, v in stats_sum.items()}
    for kind in ("text", "speech"):
        if f"n_{kind}" in totals:
            n = totals[f"n_{kind}"]
            row[f"{kind}_loss"] = totals[f"{kind}_ce_sum"] / n if n else None  # None: no such targets this step
            row[f"n_{kind}"] = n
    if "entropy_sum" in totals:
        row["entropy"] = totals["entropy_sum"] / totals["n_speech"] if totals["n_speech"] else None
    return row


def _all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    return all_reduce_mean(value, info) * info.world_size


def _flatten(prefix: str, node, out: dict[str, float]) -> dict[str, float]:
    """Numeric leaves of a nested metrics dict as ``prefix/key/subkey`` -> value."""
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(f"{prefix}/{k}", v, out)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out[prefix] = float(node)
    return out


@torch.no_grad()
def validate_benchmarks(run: Run) -> dict[str, float]:
    """The ``validation.eval`` benchmarks scored with the model as it is (learning curves in metrics.jsonl)."""
    from smoltolk.eval.run import make_scorer

    if not run.val_items:
        return {}
    run.model.eval()
    out: dict[str, float] = {}
    for task, items, cfg in run.val_items:
        _flatten(f"val/{task.name}", task.metrics(make_scorer(run.model, cfg).score(items), cfg.reduction), out)
    run.model.train()
    return out


def build_validation_benchmarks(run: Run) -> list:
    """Read and check ``validation.eval``'s benchmarks and build their items once, before training starts."""
    from smoltolk.eval.config import build_eval_config
    from smoltolk.eval.run import build_tasks, resolve_text_bos, resolve_units
    from smoltolk.model.hf import load_tokenizer

    if not run.cfg.validation.eval:
        return []
    cfg = build_eval_config(None, [], run.cfg.validation.eval, progress=False)
    tasks = build_tasks(cfg)
    if any(t.text for t in tasks) and run.tokenizer_file is None:
        raise ConfigError("validation.eval: text benchmarks need the model's tokenizer (model.tokenizer)")
    tokenizer = load_tokenizer(run.tokenizer_file) if run.tokenizer_file is not None else None
    units = resolve_units(tasks, cfg, run.out / "validation")
    cfg.text_bos = resolve_text_bos(run.model, cfg.text_bos, tokenizer)  # as smoltolk eval resolves it
    cfg.text_bos = "none" if cfg.text_bos is None else cfg.text_bos
    return [(t, t.items(units[t.name], tokenizer), cfg) for t in tasks]


@torch.no_grad()
def validate(run: Run) -> dict[str, float]:
    """Mean loss per validation stream (one per dataset in ``validation.datasets``), and the
    ``validation.eval`` benchmarks."""
    vcfg = run.cfg.validation
    if not vcfg.datasets:
        return validate_benchmarks(run)
    run.model.eval()
    results = {}
    for ds in vcfg.datasets:
        data = DataConfig(datasets=[ds], modality_weights={ds.modality: 1.0}, context=run.cfg.data.context,
                          interleave=run.cfg.data.interleave, mask_documents=run.cfg.data.mask_documents,
                          seed=vcfg.seed)
        sampler = BatchSampler(Mixture.for_model(data, run.model.speech_vocab), run.cfg.schedule.micro_batch,
                               run.info.rank, run.info.world_size)
        losses = [compute_loss(run, next(sampler))[0].detach().float() for _ in range(vcfg.batches)]
        results[f"val/{ds.name or Path(ds.path).name}/{ds.modality}"] = float(
            all_reduce_mean(torch.stack(losses).mean(), run.info))
    run.model.train()
    return {**results, **validate_benchmarks(run)}


# ---------------------------------------------------------------------------------------- checkpoints
def _write_model(run: Run):
    def write(directory: Path, state: dict) -> None:
        run.model.write_files(directory, state)  # each model type's one writer of its format
        if run.tokenizer_file is not None:
            (directory / "tokenizer.json").write_bytes(run.tokenizer_file.read_bytes())
    return write


def _first_nonfinite(run: Run) -> str | None:
    """The name of a parameter holding inf/NaN on any rank (a collective), else None."""
    bad = None
    for name, p in run.model.named_parameters():
        local = p.to_local() if hasattr(p, "to_local") else p  # FSDP2: this rank's shard
        if not torch.isfinite(local.detach()).all():
            bad = name
            break
    flag = _all_reduce_sum(torch.tensor(float(bad is not None), device=run.info.device), run.info)
    return (bad or "a parameter on another rank") if float(flag) > 0 else None


def _last_complete(run: Run) -> str:
    good = ckpt.list_checkpoints(run.out / "checkpoints")
    return f"the last complete checkpoint is {good[-1]}" if good else "no checkpoint was written yet"


def save_checkpoint(run: Run) -> Path | None:
    """Gather the full state (a collective), write it on rank 0, keep the last K. Refuses non-finite weights."""
    bad = _first_nonfinite(run)
    if bad is not None:
        raise NonFiniteLossError(f"step {run.step}: {bad} holds inf/NaN, so no checkpoint is written; "
                                 f"{_last_complete(run)}")
    model_state = ckpt.full_model_state(run.model)
    opt_state = ckpt.full_optimizer_state(run.model, run.optimizer)
    path = ckpt.step_dir(run.out / "checkpoints", run.step)
    if run.info.is_main:
        state = {"step": run.step, "stage": stage_of(max(run.step - 1, 0), run.cfg.schedule), "tokens": run.tokens,
                 "skipped": run.skipped, "samplers": {str(k): s.state_dict() for k, s in run.samplers.items()},
                 "world_size": run.info.world_size, "config": to_dict(run.cfg)}
        from safetensors import SafetensorError

        try:
            ckpt.save(path, model=run.model, model_state=model_state, optimizer_state=opt_state,
                      train_state=state, write_model=_write_model(run))
        except CheckpointError:
            raise
        except (OSError, SafetensorError) as e:  # a full disk, a permission (safetensors has its own error type)
            raise CheckpointError(f"cannot write {path} ({e}); nothing of it was kept; {_last_complete(run)}; "
                                  "free space (or fix the folder) and run the same command to resume") from None
        ckpt.prune(run.out / "checkpoints", run.cfg.run.keep_checkpoints, path)
    _barrier(run.info)
    return path


def resume(run: Run) -> None:
    """Continue from run.resume: "auto" (the latest checkpoint under out_dir, if any), "never", or a path."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    choice = run.cfg.run.resume
    if choice == "never":  # a fresh start: the rows of an earlier run in this folder go
        _keep_metrics(run, 0)
        return
    if choice == "auto":
        found = ckpt.list_checkpoints(run.out / "checkpoints")
        if not found:  # killed before its first checkpoint: start over, without the old rows
            _keep_metrics(run, 0)
            return
        path = found[-1]
    else:
        path = Path(choice)
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such checkpoint directory (run.resume)")
        later = [p for p in ckpt.list_checkpoints(run.out / "checkpoints") if p.name > path.name]
        if later:
            raise CheckpointError(f"run.resume={path}, but {run.out / 'checkpoints'} holds later checkpoints "
                                  f"{[p.name for p in later]}; resume into a new run.out_dir or remove them")
    model_state, opt_state, state = ckpt.load(path)
    model_state = run.model.state_from_files(model_state)
    aliases = ckpt.tied_names(run.model)
    for alias, target in aliases.items():
        model_state.setdefault(alias, model_state[target])
    own = run.model.state_dict()
    mismatch = [f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}" for k, v in model_state.items()
                if k in own and tuple(v.shape) != tuple(own[k].shape)]
    absent = sorted(set(own) - set(model_state) - set(aliases))
    extra = sorted(set(model_state) - set(own))
    if mismatch or absent or extra:
        raise CheckpointError(f"{path}: the checkpoint does not fit the model this config builds ("
                              + ("; ".join(mismatch[:3]) if mismatch else f"it lacks {absent[:3]}" if absent
                                 else f"the model has no {extra[:3]}")
                              + "); resume with the settings it was saved with (its train_state.json has the "
                              "config), or start afresh (run.resume=never or a new run.out_dir)")
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(run.model, model_state, options=options)
    # A stage-1 checkpoint has no optimizer state for the frozen parameters: load non-strictly, then
    # drop the state torch initialises for them, so they start fresh in stage 2 as in an unbroken run.
    try:
        set_optimizer_state_dict(run.model, run.optimizer, opt_state,
                                 options=StateDictOptions(full_state_dict=True, strict=False))
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path / 'optimizer.safetensors'}: does not fit this run's optimizer "
                              f"({type(e).__name__}: {str(e)[:200]}); {ckpt.RESUME_ADVICE}") from None
    saved = set(opt_state["state"])
    for name, p in run.model.named_parameters():
        if name not in saved:
            run.optimizer.state.pop(p, None)
    try:
        for stage, s in state["samplers"].items():
            if int(stage) in run.samplers:
                run.samplers[int(stage)].load_state_dict(s)
        if "cpu" in state["rng"]:
            torch.set_rng_state(state["rng"]["cpu"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its sampler or RNG state is damaged ({type(e).__name__}: {str(e)[:200]}); "
                              f"{ckpt.RESUME_ADVICE}") from None
    run.step, run.tokens, run.skipped = state["step"], state["tokens"], state["skipped"]
    _keep_metrics(run, run.step)
    if run.info.is_main:
        print(f"resumed from {path} at step {run.step}", flush=True)


def _keep_metrics(run: Run, step: int) -> None:
    """Keep the metrics.jsonl rows up to ``step`` (those of the steps the run resumes after); a torn last
    line (a kill mid-write) is dropped with a warning."""
    metrics = run.out / "metrics.jsonl"
    if not (run.info.is_main and metrics.is_file()):
        return
    lines = metrics.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                print(f"warning: {metrics}: dropping its torn last line (a write was cut off)", file=sys.stderr)
                continue
            raise CheckpointError(f"{metrics}:{n}: not JSON; remove that line (or the file) to resume") from None
        if row.get("step", 0) <= step:
            rows.append(line)
    metrics.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def _barrier(info: DistInfo) -> None:
    if info.distributed:
        torch.distributed.barrier()


# ---------------------------------------------------------------------------------------- driver
def flops_per_token(model: nn.Module, context: int) -> float:
    """Forward+backward FLOPs per token: 6 N (non-embedding parameters) + 12 L d T (attention)."""
    emb = {id(p) for n, p in model.named_parameters() if "embed" in n or "lm_head" in n or "speech_head" in n}
    n = sum(p.numel() for p in model.parameters() if id(p) not in emb)
    from smoltolk.model.llama import DecoderLayer

    layers = [m for m in model.modules() if isinstance(m, DecoderLayer)]
    d = layers[0].self_attn.q_proj.in_features if layers else 0
    return 6.0 * n + 12.0 * len(layers) * d * context


class Logger:
    """Rank-0 metrics: a JSONL file, a progress bar, and optional TensorBoard / W&B."""

    def __init__(self, run: Run, total: int) -> None:
        from smoltolk.progress import progress_bar

        self.main = run.info.is_main
        self.text_only = run.cfg.model.text_only  # text pretraining has no stages to show
        self.path = run.out / "metrics.jsonl"
        self.bar = progress_bar(total=total, initial=run.step, desc=f"train {run.out.name}", unit="step",
                                disable=not (self.main and run.cfg.run.progress))
        self.tb = self.wb = None
        if self.main and run.cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run.out / "tensorboard"))
        if self.main and run.cfg.run.wandb:
            import wandb

            self.wb = wandb.init(project=run.cfg.run.wandb_project, config=to_dict(run.cfg), dir=str(run.out))

    def log(self, row: dict, write: bool) -> None:
        if not self.main:
            return
        if write:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if self.tb is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and k != "step":
                        self.tb.add_scalar(k, v, row["step"])
            if self.wb is not None:
                self.wb.log(row, step=row["step"])
        if "loss" in row:
            self.bar.set_postfix(loss=f"{row['loss']:.3f}", stage="text LM" if self.text_only else row.get("stage"))

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training; returns a summary. Rank 0 writes checkpoints, metrics and the final model.
    SIGTERM / SIGUSR1 (a scheduler's preemption) end the current step, write a checkpoint and raise
    :class:`~smoltolk.errors.Preempted` (:mod:`smoltolk.preempt`); the same call then resumes exactly."""
    from smoltolk.preempt import SignalStop, signals_flag

    run = setup(cfg)
    try:
        with signals_flag() as flag:
            return _loop(run, flag)
    except KeyboardInterrupt as e:  # Ctrl-C, or a preemption signal outside the loop (SignalStop)
        kind, how = (Preempted, f" ({e.signal})") if isinstance(e, SignalStop) else (Interrupted, "")
        raise kind(f"at step {run.step}{how}; {_last_complete(run)}; run the same command to resume") from None
    finally:
        cleanup()


def _stop_requested(run: Run, flag: dict) -> bool:
    """Whether any rank got a preemption signal (every rank asks at every step, so all stop at the same one)."""
    asked = flag["signal"] is not None
    if run.info.world_size > 1 and torch.distributed.is_initialized():
        votes = torch.tensor([float(asked)], device=run.info.device)
        torch.distributed.all_reduce(votes, op=torch.distributed.ReduceOp.MAX)
        return bool(votes.item())
    return asked


def _preempt(run: Run, logger: Logger, saved_at: int, flag: dict) -> None:
    path = ckpt.step_dir(run.out / "checkpoints", run.step)
    if saved_at != run.step:
        save_checkpoint(run)
    logger.close()
    raise Preempted(f"preempted at step {run.step} ({flag['signal'] or 'another rank was signalled'}); "
                    f"checkpoint {path}; run the same command to resume")


def _loop(run: Run, flag: dict | None = None) -> dict:
    flag = {"signal": None} if flag is None else flag
    cfg, out = run.cfg, run.out
    total = cfg.schedule.total_steps
    if run.info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    logger = Logger(run, total)
    tokens_per_step = cfg.schedule.micro_batch * cfg.schedule.grad_accum * run.info.world_size * cfg.data.context
    fpt = flops_per_token(run.model, cfg.data.context)
    peak = cfg.run.peak_flops
    t_last = time.perf_counter()
    saved_at = -1  # the step of the last checkpoint this loop wrote
    while run.step < total:
        row = train_step(run, run.step)
        if not row["finite"]:
            what = "loss" if not math.isfinite(row["loss"]) else "gradient norm"
            msg = f"step {run.step + 1}: the {what} is {row.get('grad_norm') if what != 'loss' else row['loss']}"
            if cfg.run.on_nan == "stop" or run.skipped >= cfg.run.max_skipped_steps:
                run.optimizer.zero_grad(set_to_none=True)
                good = ckpt.list_checkpoints(out / "checkpoints")
                advice = ("lower the learning rate (optim.lr) or set run.on_nan=skip" if cfg.run.on_nan == "stop" else
                          f"that is {run.skipped + 1} non-finite steps (run.max_skipped_steps = "
                          f"{cfg.run.max_skipped_steps}); lower the learning rate (optim.lr)")
                raise NonFiniteLossError(f"{msg} (not finite); stopping. The last good checkpoint is "
                                         f"{good[-1] if good else 'none (no checkpoint was written yet)'}; {advice}")
            run.optimizer.zero_grad(set_to_none=True)
            run.skipped += 1
            run.step += 1
            logger.log({"step": run.step, "skipped_non_finite": run.skipped}, write=True)
            continue
        run.step += 1
        run.tokens += tokens_per_step
        now = time.perf_counter()
        tps = tokens_per_step / max(now - t_last, 1e-9)
        t_last = now
        row.update(tokens=run.tokens, tokens_per_s=tps, memory_mb=_memory_mb(run.info.device))
        if peak:
            row["mfu"] = tps * fpt / (peak * run.info.world_size)
        del row["finite"]
        validating = bool(cfg.validation.every) and run.step % cfg.validation.every == 0
        if validating:
            row.update(validate(run))
            t_last = time.perf_counter()
        run.history.append(row)
        logger.log(row, write=run.step % cfg.run.log_every == 0 or run.step == total or validating)
        logger.bar.update()
        if cfg.run.checkpoint_every and run.step % cfg.run.checkpoint_every == 0 and run.step < total:
            save_checkpoint(run)
            saved_at, t_last = run.step, time.perf_counter()
        if run.step < total and _stop_requested(run, flag):
            _preempt(run, logger, saved_at, flag)
    last = run.history[-1] if run.history else {}
    done = {k: v for k, v in last.items() if k.startswith("val/")} if last.get("step") == run.step else {}
    final_val = done or validate(run)  # not twice when the last step just validated
    last_ckpt = ckpt.step_dir(out / "checkpoints", run.step)
    if not last_ckpt.is_dir():
        save_checkpoint(run)
    logger.close()
    summary = {"steps": run.step, "tokens": run.tokens, "skipped": run.skipped, "checkpoint": str(last_ckpt),
               "final_validation": final_val, "last": run.history[-1] if run.history else None}
    if run.info.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_train_config(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """A recipe YAML plus ``a.b=c`` overrides -> validated :class:`TrainConfig`."""
    from smoltolk.config import load_config

    return load_config(TrainConfig, path, overrides)


