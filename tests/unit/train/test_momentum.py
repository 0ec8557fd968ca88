"""The EMA teacher (``loss.target: momentum``): built as a frozen copy, moved by θ_m ← m·θ_m + (1 − m)·θ after
each optimiser step, its embeddings giving the target (1 − β)·I + β·softmax(s·U_m V_mᵀ), checked by hand on a tiny
model after k updates; and the sigmoid loss's bias on the model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from softclip.config import Config, LossConfig, ModelConfig, OptimConfig
from softclip.models import build_model, count_parameters
from softclip.objective import SoftCLIPObjective
from softclip.train.optim import build_optimizer

M, K, BETA, N = 0.8, 3, 0.4, 6


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return build_model(ModelConfig(name="tiny-vit-32"), loss=LossConfig(target="momentum", momentum=M))


def _batch(tokenizer, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    words = ["red square", "blue circle", "two green stars", "a grey box", "yellow cross", "red circle"]
    return {"image": torch.randn(N, 3, 32, 32, generator=g), "text": tokenizer(words[:N])}


def test_the_teacher_starts_as_a_frozen_copy_outside_the_optimiser(built):
    model, *_ = built
    student, teacher = model.clip.state_dict(), model.teacher.state_dict()
    assert student.keys() == teacher.keys() and all(torch.equal(student[k], teacher[k]) for k in student)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    model.train()
    assert model.training and not model.teacher.training
    opt = build_optimizer(OptimConfig(lr=1e-3), model, torch.device("cpu"))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in model.teacher.parameters()}
    counts = count_parameters(model)
    assert counts["teacher"] == sum(counts[k] for k in ("image", "text", "token_embedding", "logit"))
    assert counts["trainable"] == counts["total"] - counts["teacher"]
    assert any(k.startswith("teacher.") for k in model.state_dict())  # checkpointed with the model


def test_k_ema_updates_and_the_target_match_a_hand_computation():
    torch.manual_seed(1)
    model, _, _, tokenizer = build_model(
        ModelConfig(name="tiny-vit-32"), loss=LossConfig(target="momentum", momentum=M)
    )
    model.train()
    expected = {k: v.detach().clone().double() for k, v in model.clip.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    objective = SoftCLIPObjective("hard", soft_weight=0.0, re_weight=0.0, roi_weight=0.0)
    for step in range(K):
        out = model(_batch(tokenizer, step), image_source="image", text_source="text")
        objective(**out)["loss"].backward()
        opt.step()
        opt.zero_grad()
        model.update_teacher()
        student = model.clip.state_dict()
        for k in expected:  # θ_m ← m·θ_m + (1 − m)·θ, by hand in float64
            expected[k] = M * expected[k] + (1 - M) * student[k].double()
    teacher = model.teacher.state_dict()
    for k, want in expected.items():
        torch.testing.assert_close(teacher[k].double(), want, rtol=1e-5, atol=1e-6)
    moved = [k for k in expected if not torch.equal(teacher[k], model.clip.state_dict()[k])]
    assert moved, "the teacher should lag the student"

    # the teacher's embeddings are those of a model holding the hand-computed weights
    by_hand = copy.deepcopy(model.clip)
    by_hand.load_state_dict({k: v.float() for k, v in expected.items()})
    batch = _batch(tokenizer, seed=9)
    out = model(batch, image_source="image", text_source="text")
    with torch.no_grad():
        u_m = by_hand.encode_image(batch["image"], normalize=True)
        v_m = by_hand.encode_text(batch["text"], normalize=True)
    torch.testing.assert_close(out["side"].image_teacher, u_m, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["side"].text_teacher, v_m, rtol=1e-4, atol=1e-5)
    assert not out["side"].image_teacher.requires_grad

    # the soft term with ce is the cross-entropy against Y = (1 − β) I + β softmax(s·U_m V_mᵀ), per direction
    obj = SoftCLIPObjective(
        "momentum", beta=BETA, divergence="ce", nce_weight=0.0, re_weight=0.0, roi_weight=0.0
    )
    terms = obj(**out)
    s = out["logit_scale"].detach()
    u, v = out["image_features"].detach(), out["text_features"].detach()
    eye = torch.eye(N)
    y_i2t = (1 - BETA) * eye + BETA * torch.softmax(s * u_m @ v_m.T, dim=1)
    y_t2i = (1 - BETA) * eye + BETA * torch.softmax(s * v_m @ u_m.T, dim=1)
    ce_i2t = -(y_i2t * torch.log_softmax(s * u @ v.T, dim=1)).sum(1).mean()
    ce_t2i = -(y_t2i * torch.log_softmax(s * v @ u.T, dim=1)).sum(1).mean()
    torch.testing.assert_close(terms["soft_loss"], 0.5 * (ce_i2t + ce_t2i), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms["target_pos_mass"], 0.5 * (y_i2t.diagonal().mean() + y_t2i.diagonal().mean()),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_the_momentum_target_needs_a_teacher_and_the_same_pairing():
    u = F.normalize(torch.randn(4, 3), dim=1)
    with pytest.raises(ValueError, match="needs the EMA teacher's embeddings"):
        SoftCLIPObjective("momentum")(u, u, torch.tensor(5.0))
    with pytest.raises(ValueError, match="loss.pairing=cross with loss.target=momentum"):
        SoftCLIPObjective("momentum", pairing="cross")
    with pytest.raises(ValueError, match="loss.pairing=mean with loss.target=momentum"):
        LossConfig(target="momentum", pairing="mean")
    assert LossConfig(target="momentum").beta == 0.4  # ALBEF's α unless β is given
    assert LossConfig(target="momentum", beta=0.2).beta == 0.2
    with pytest.raises(ValueError):
        LossConfig(momentum=1.0)
    with pytest.raises(ValueError, match="no EMA teacher"):
        build_model(ModelConfig(name="tiny-vit-32"))[0].encode_teacher(
            torch.zeros(1, 3, 32, 32), torch.zeros(1, 4, dtype=torch.long)
        )


def test_the_loss_section_builds_the_bias_and_the_teacher():
    cfg = Config.model_validate({"loss": {"target": "momentum", "contrastive": "sigmoid", "re_weight": 0.0,
                                          "momentum": 0.9}})  # fmt: skip
    assert (cfg.loss.learns_bias, cfg.loss.teacher_momentum) == (True, 0.9)
    assert (Config().loss.learns_bias, Config().loss.teacher_momentum) == (False, None)
    model = build_model(cfg.model, loss=cfg.loss)[0]
    assert model.teacher is not None and model.momentum == 0.9
    torch.testing.assert_close(model.logit_bias.detach(), torch.tensor(-10.0))
    torch.testing.assert_close(model.clip.logit_scale.detach().exp(), torch.tensor(10.0))
    towers = build_model(cfg.model, loss=cfg.loss, teacher=False)[0]  # what evaluation builds
    assert towers.teacher is None and towers.logit_bias is not None
    plain = build_model(ModelConfig(name="tiny-vit-32"))[0]
    assert plain.logit_bias is None and plain.teacher is None
    assert math.isclose(float(plain.clip.logit_scale.detach().exp()), 1 / 0.07, rel_tol=1e-5)
