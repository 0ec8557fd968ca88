"""The oracle target (SynthScenes' own truth of which caption describes which image) against references built
here: the generator's ``describes``, hand-made scenes, and the hard target it must reduce to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softclip.config import ConfigError, load_config
from softclip.data.synth.captions import describes, make_caption, scene_codes
from softclip.data.synth.scenes import sample_scene
from softclip.data.synth.spec import SynthConfig
from softclip.objective import SideInputs, SoftCLIPObjective
from softclip.objective.oracle import relevance
from softclip.objective.targets import SideView, oracle_target


def _codes(scenes, captions) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [scene_codes([o.to_json() for o in objs], cap.to_json()) for objs, cap in zip(scenes, captions, strict=True)]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


def _scenes(n: int, seed: int = 0, **spec):
    cfg = SynthConfig.preset("quick", **spec)
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, cfg, cfg.image_size) for _ in range(n)]
    return scenes, [make_caption(rng, cfg, objs)[0] for objs in scenes]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relevance_equals_the_generators_rule(seed: int) -> None:
    scenes, captions = _scenes(60, seed, n_shapes=2, n_colours=2)  # few types: many true cross matches
    image, caption = _codes(scenes, captions)
    got = relevance(image, caption)
    want = torch.tensor([[describes(c, objs) for c in captions] for objs in scenes])
    assert torch.equal(got, want)
    assert got.diagonal().all() and int(got.sum()) > 60  # own captions hold, and some others describe too


def _hand_codes() -> tuple[torch.Tensor, torch.Tensor]:
    """3 images: {red circle}, {red circle, blue square}, {blue square}; captions: 'a red circle',
    'two objects: a red circle and a blue square', 'a blue square'."""
    objs = [[{"shape": "circle", "colour": "red", "size": "small"}],
            [{"shape": "circle", "colour": "red", "size": "large"}, {"shape": "square", "colour": "blue", "size": "small"}],
            [{"shape": "square", "colour": "blue", "size": "large"}]]  # fmt: skip
    red, blue = {"shape": "circle", "colour": "red", "size": None}, {"shape": "square", "colour": "blue", "size": None}
    caps = [{"mentions": [red], "count": None}, {"mentions": [red, blue], "count": 2}, {"mentions": [blue], "count": None}]
    pairs = [scene_codes(o, c) for o, c in zip(objs, caps, strict=True)]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


def test_oracle_target_by_hand() -> None:
    image, caption = _hand_codes()
    rel = relevance(image, caption)
    assert rel.tolist() == [[True, False, False], [True, True, True], [False, False, True]]
    side = SideView(torch.zeros(3, 1, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64), relevant=rel)
    q = oracle_target(side, tau=0.07).exp()
    want = torch.tensor([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(q, want)
    torch.testing.assert_close(q.sum(1), torch.ones(3, dtype=torch.float64))
    masked = SideView(side.rows, side.cols, col_valid=torch.tensor([True, False, True]), relevant=rel)
    torch.testing.assert_close(oracle_target(masked, 0.07).exp()[1], torch.tensor([0.5, 0, 0.5], dtype=torch.float64))
    nothing = SideView(side.rows, side.cols, relevant=torch.zeros(3, 3, dtype=torch.bool), offset=0)
    torch.testing.assert_close(oracle_target(nothing, 0.07).exp(), torch.eye(3, dtype=torch.float64))  # one-hot


def _features(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, 6, generator=g, dtype=torch.float64), dim=1)
    v = F.normalize(torch.randn(n, 6, generator=g, dtype=torch.float64), dim=1)
    return u, v, torch.tensor(5.0, dtype=torch.float64)


def test_objective_oracle_targets_both_directions() -> None:
    image, caption = _hand_codes()
    u, v, s = _features(3)
    out = SoftCLIPObjective(target="oracle", beta=0.5, re_weight=0.0)(u, v, s, side=SideInputs(image_scene=image, text_scene=caption))
    # i2t rows: image 1 is described by all three captions; t2i rows: caption 0 describes images 0 and 1
    y_i2t = torch.tensor([[1, 0, 0], [1 / 6, 2 / 3, 1 / 6], [0, 0, 1]], dtype=torch.float64)
    y_t2i = torch.tensor([[0.75, 0.25, 0], [0, 1, 0], [0, 0.25, 0.75]], dtype=torch.float64)
    assert float(out["target_pos_mass"]) == pytest.approx(0.5 * (y_i2t.diagonal().mean() + y_t2i.diagonal().mean()))
    entropy = lambda y: float(-(torch.where(y > 0, y * y.log(), 0.0)).sum(1).mean())  # noqa: E731
    assert float(out["target_entropy"]) == pytest.approx(0.5 * (entropy(y_i2t) + entropy(y_t2i)))


def test_one_caption_per_image_reduces_to_hard_targets() -> None:
    scenes, captions = _scenes(200, 3)
    image, caption = _codes(scenes, captions)
    rel = relevance(image, caption)
    alone: list[int] = []  # greedily, pairs whose captions describe no other chosen image and vice versa
    for i in range(200):
        rows = [*alone, i]
        if torch.equal(rel[rows][:, rows], torch.eye(len(rows), dtype=torch.bool)):
            alone.append(i)
    image, caption = image[alone], caption[alone]
    assert len(alone) >= 8 and torch.equal(relevance(image, caption), torch.eye(len(alone), dtype=torch.bool))
    u, v, s = _features(len(alone))
    kw = dict(beta=0.4, divergence="symkl", re_weight=0.5, soft_weight=1.0)
    oracle = SoftCLIPObjective(target="oracle", **kw)(u, v, s, side=SideInputs(image_scene=image, text_scene=caption))
    hard = SoftCLIPObjective(target="hard", **kw)(u, v, s)
    for key in ("loss", "nce_loss", "soft_loss"):
        torch.testing.assert_close(oracle[key], hard[key], rtol=1e-12, atol=1e-12)


def test_oracle_without_scene_codes_says_what_is_missing() -> None:
    u, v, s = _features(4)
    with pytest.raises(ValueError, match="oracle needs scene annotations"):
        SoftCLIPObjective(target="oracle")(u, v, s)


def test_config_refuses_the_oracle_on_data_without_scene_annotations() -> None:
    with pytest.raises(ConfigError, match=r"loss\.target=oracle needs scene annotations.*data\.source=csv"):
        load_config("ablations/base.yaml", overrides=["loss.target=oracle", "data.source=csv"], profile="smoke")
    assert load_config("ablations/base.yaml", overrides=["loss.target=oracle"], profile="smoke").loss.target == "oracle"
