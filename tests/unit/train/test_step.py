"""One step's computation: accumulation equals the full-batch gradient; clipping; non-finite names."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softclip.objective import SideInputs, SoftCLIPObjective
from softclip.train.dist import DistEnv
from softclip.train.step import (
    StepModel,
    clip_gradients,
    equalise,
    forward_backward,
    nonfinite_terms,
    step_seed,
)

N, D_IMG, VOCAB, D_ROI = 8, 6, 20, 5


class Toy(nn.Module):
    """A SoftCLIPModel stand-in with the same forward contract (optionally with BatchNorm and dropout)."""

    def __init__(self, noisy: bool) -> None:
        super().__init__()
        extra = [nn.BatchNorm1d(8), nn.Dropout(0.3)] if noisy else []
        self.img = nn.Sequential(nn.Linear(D_IMG, 8), *extra, nn.Linear(8, 4))
        self.txt = nn.Embedding(VOCAB, 4)
        self.roi = nn.Linear(D_ROI, 4)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, batch: dict, image_source: str, text_source: str) -> dict:
        with torch.no_grad():
            tags = F.normalize(self.txt(batch["tags"]).mean(1), dim=-1)
        return {
            "image_features": F.normalize(self.img(batch["image"]), dim=-1),
            "text_features": F.normalize(self.txt(batch["text"]).mean(1), dim=-1),
            "logit_scale": self.logit_scale.exp(),
            "side": SideInputs(image_side=self.roi(batch["roi"]), text_side=tags, image_side_mask=batch["roi_mask"]),
        }


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(N, D_IMG, generator=g),
        "text": torch.randint(0, VOCAB, (N, 3), generator=g),
        "tags": torch.randint(0, VOCAB, (N, 2), generator=g),
        "roi": torch.randn(N, D_ROI, generator=g),
        "roi_mask": torch.tensor([True, True, False, True, True, True, False, True]),
    }


def _split(batch: dict, parts: int) -> list[dict]:
    size = N // parts
    return [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(parts)]


def _step_model(model: nn.Module) -> StepModel:
    objective = SoftCLIPObjective(target="selfsim", beta=0.3, roi_weight=1.0)
    return StepModel(model, model, objective, "roi", "tag", torch.device("cpu"))


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_accumulation_equals_the_full_batch_gradient() -> None:
    """In float64, so that the summation order of the CPU's float32 kernels (AVX2 or AVX-512) cannot matter."""
    torch.manual_seed(0)
    model = Toy(noisy=False).double()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in _batch().items()}
    full = forward_backward(_step_model(model), [batch])
    reference = _grads(model)
    model.zero_grad()
    accum = forward_backward(_step_model(model), _split(batch, 4))
    assert accum["loss"].item() == pytest.approx(full["loss"].item(), rel=1e-12)
    assert full["roi_loss"].item() > 0
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, reference[name], rtol=1e-10, atol=1e-13, msg=name)


def test_accumulation_replays_dropout_and_batchnorm() -> None:
    torch.manual_seed(0)
    model = Toy(noisy=True).train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    micro = _split(_batch(1), 2)
    torch.manual_seed(5)  # reference: embed each micro-batch once with a graph, full-batch objective
    outs = [model(m, "roi", "tag") for m in micro]
    def cat(values: list) -> torch.Tensor | None:
        return None if values[0] is None else torch.cat(values)

    sides = [dict(o["side"].items()) for o in outs]
    merged = {
        "image_features": cat([o["image_features"] for o in outs]),
        "text_features": cat([o["text_features"] for o in outs]),
        "logit_scale": outs[0]["logit_scale"],
        "side": SideInputs(**{k: cat([s[k] for s in sides]) for k in sides[0]}),
    }
    ref_loss = _step_model(model).objective(**merged)["loss"]
    ref_loss.backward()
    reference, ref_buffers = _grads(model), {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(start)
    model.zero_grad()
    torch.manual_seed(5)
    terms = forward_backward(_step_model(model), micro)
    assert terms["loss"].item() == pytest.approx(ref_loss.item(), rel=1e-6)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, reference[name], rtol=1e-5, atol=1e-7, msg=name)
    for name, buf in model.state_dict().items():  # BatchNorm statistics updated once per micro-batch
        torch.testing.assert_close(buf, ref_buffers[name], msg=name)


def test_clip_gradients_reports_the_norm_and_clips() -> None:
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))
    a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 4.0, 0.0, 0.0])
    assert clip_gradients([a, b], 0.0).item() == pytest.approx(5.0)
    assert a.grad[0].item() == 3.0  # 0 disables clipping
    assert clip_gradients([a, b], 1.0).item() == pytest.approx(5.0)
    assert torch.cat([a.grad, b.grad]).norm().item() == pytest.approx(1.0, rel=1e-5)


def test_nonfinite_terms_and_helpers() -> None:
    terms = {
        "loss": torch.tensor(float("nan")),
        "nce_loss": torch.tensor(1.0),
        "soft_loss": torch.tensor(float("inf")),
        "pred_pos_mass": torch.tensor(float("nan")),
    }
    assert nonfinite_terms(terms) == ["loss=nan", "soft_loss=inf"]
    micro = [{"image": torch.zeros(3, 2)}]
    assert equalise(micro, DistEnv()) is micro
    assert step_seed(0, 0, 1) != step_seed(0, 1, 0) != step_seed(1, 0, 0)
