"""Every recipe in recipes/ loads into a valid training config with the paper's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoltolk.model.config import ABLATIONS, SpeechConfig
from smoltolk.train.trainer import load_train_config

RECIPES = Path(__file__).parent.parent / "recipes"


@pytest.mark.parametrize("path", sorted(p for p in RECIPES.rglob("*.yaml") if p.name != "sizes.yaml"),
                         ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_loads(path):
    """Every recipe loads; the demo's with their sizes from recipes/demo/sizes.yaml, as the demo gives them."""
    from smoltolk.demo import SIZES, size_settings

    demo = path.parent.name == "demo" and path.stem != "common"
    cfg = load_train_config(path, size_settings(path.stem, SIZES["default"]) if demo else [])
    assert cfg.schedule.total_steps > 0
    if demo:
        assert cfg.data.context == SIZES["default"].context


def test_paper_recipes_follow_the_paper():
    big = {n: load_train_config(RECIPES / f"{n}.yaml", []) for n in ("smoltolk-150m", "smoltolk-400m", "smoltolk-2b")}
    assert [big[n].model.speech.entropy_beta for n in big] == [0.0, 0.01, 0.01]
    assert [big[n].optim.lr for n in big] == [3e-4, 3e-4, 1e-4]
    for cfg in big.values():
        assert cfg.model.speech.rope_theta == 100000.0
        assert (cfg.schedule.stage1_steps, cfg.schedule.total_steps) == (1000, 16000)
        assert cfg.schedule.micro_batch * cfg.schedule.grad_accum * 4 * cfg.data.context == 2**20
        assert cfg.optim.speech_lr_mult_stage1 == 10 and cfg.optim.warmup_steps == 100
        assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.1 and cfg.optim.grad_clip == 1.0
        assert cfg.stage1_data == {"interleaved": 1.0}
    for size in ("135m", "360m", "1.7b"):
        assert load_train_config(RECIPES / f"baseline-{size}.yaml", []).model.speech.is_baseline


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_flips_only_its_switches(name):
    base = load_train_config(RECIPES / "smoltolk-400m.yaml", []).model.speech
    abl = load_train_config(RECIPES / "ablations" / f"smoltolk-400m-{name}.yaml", []).model.speech
    changed = {k for k in SpeechConfig.__dataclass_fields__ if getattr(base, k) != getattr(abl, k)}
    assert changed == {k for k, v in ABLATIONS[name].items() if getattr(base, k) != v}
