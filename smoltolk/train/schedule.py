"""Learning rates as pure functions of the step (so resuming needs only the step number).

Stage 1 (steps 0 .. S1-1): backbone and text embeddings frozen (rate 0); speech parameters follow
a trapezoid up to ``speech_lr_mult_stage1 x lr``: linear warm-up over ``warmup_steps``, constant,
then linear decay to 0 over the last ``decay_fraction`` of stage 1.
Stage 2 (steps S1 .. S1+S2-1): backbone/text at the constant ``lr`` (optionally warmed up over
``text_warmup_steps``), speech parameters at ``speech_lr_mult_stage2 x lr``; with
``stage2_decay_fraction`` f > 0 both decay linearly to 0 over stage 2's last f of its steps (the paper keeps
them constant). Stage 2 starts at its configured rate and runs its configured number of steps (the authors'
release did neither).
"""

from __future__ import annotations

from smoltolk.train.config import OptimConfig, ScheduleConfig


def trapezoid(step: int, total: int, warmup: int, decay_fraction: float) -> float:
    """Multiplier in [0, 1] at ``step`` (0-based) of a ``total``-step trapezoid."""
    if total <= 0:
        return 0.0
    up = min(warmup, total)
    if step < up:
        return (step + 1) / up
    decay = int(round(decay_fraction * total))
    if decay > 0 and step >= total - decay:
        return (total - step) / decay
    return 1.0


def learning_rates(step: int, optim: OptimConfig, sched: ScheduleConfig) -> dict[str, float]:
    """{"speech": rate, "text": rate} for optimizer step ``step`` (0-based, counted over both stages)."""
    s1 = sched.stage1_steps
    if step < s1:
        mult = trapezoid(step, s1, optim.warmup_steps, optim.decay_fraction)
        return {"speech": optim.lr * optim.speech_lr_mult_stage1 * mult, "text": 0.0}
    k = step - s1
    warm = min(1.0, (k + 1) / optim.text_warmup_steps) if optim.text_warmup_steps > 0 else 1.0
    decay = int(round(optim.stage2_decay_fraction * sched.stage2_steps))
    if decay > 0 and k >= sched.stage2_steps - decay:
        warm *= (sched.stage2_steps - k) / decay
    return {"speech": optim.lr * optim.speech_lr_mult_stage2 * warm, "text": optim.lr * warm}


def stage_of(step: int, sched: ScheduleConfig) -> int:
    return 1 if step < sched.stage1_steps else 2
