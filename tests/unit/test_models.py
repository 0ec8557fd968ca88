"""Model factory: tiny presets, SoftCLIPModel's forward contract, sources, gradients, parameter counts."""

from __future__ import annotations

import inspect
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from softclip.config import LossConfig, ModelConfig, RoiConfig
from softclip.models import (
    IMAGE_SOURCES,
    MODEL_PRESETS,
    TEXT_SOURCES,
    SoftCLIPModel,
    build_model,
    count_parameters,
)
from softclip.objective import SideInputs, SoftCLIPObjective
from softclip.registry import RegistryError

B, KMAX, ROI_DIM = 4, 3, 20
ROI_COUNTS = [2, 0, 3, 1]


@pytest.fixture(scope="module", params=MODEL_PRESETS)
def built(request: pytest.FixtureRequest) -> tuple:
    torch.manual_seed(0)
    return build_model(ModelConfig(name=request.param), roi=RoiConfig(aggregation="mhsa", width=32, heads=2), roi_in_dim=ROI_DIM)


def _image_size(model: SoftCLIPModel) -> int:
    size = model.clip.visual.image_size
    return size[0] if isinstance(size, tuple) else size


def _batch(model: SoftCLIPModel, tokenizer) -> dict:
    g = torch.Generator().manual_seed(0)
    size = _image_size(model)
    roi_mask = torch.arange(KMAX).expand(B, -1) < torch.tensor(ROI_COUNTS).unsqueeze(1)
    return {
        "image": torch.randn(B, 3, size, size, generator=g),
        "text": tokenizer(["a red square", "two blue circles", "a green star", "a tiny yellow cross"]),
        "roi": torch.randn(B, KMAX, ROI_DIM, generator=g),
        "roi_mask": roi_mask,
        "tags": tokenizer(["red square", "", "blue circle, blue circle, grey box", "yellow cross"]),
        "tags_mask": torch.tensor([True, False, True, True]),
        "key": [f"{i:09d}" for i in range(B)],
    }


def test_presets_are_registered_with_open_clip() -> None:
    assert set(MODEL_PRESETS) == {"tiny-vit", "tiny-vit-32", "tiny-vit-32-p8", "tiny-rn", "tiny-rn-32"}
    assert set(MODEL_PRESETS) <= set(open_clip.list_models())
    cfg = open_clip.get_model_config("tiny-vit")
    assert cfg["embed_dim"] == 128 and cfg["vision_cfg"]["image_size"] == 64
    assert open_clip.get_model_config("tiny-vit-32")["vision_cfg"]["image_size"] == 32
    assert open_clip.get_model_config("tiny-rn")["vision_cfg"]["layers"] == [1, 1, 1, 1]


def test_forward_shapes_normalised_and_finite(built: tuple) -> None:
    model, _, _, tokenizer = built
    batch = _batch(model, tokenizer)
    out = model(batch)
    assert set(out) == {"image_features", "text_features", "logit_scale", "logit_bias", "side"}
    assert set(inspect.signature(SoftCLIPObjective.forward).parameters) >= set(out)  # the objective's keywords
    side = out["side"]
    assert isinstance(side, SideInputs)
    assert out["logit_bias"] is None and side.image_teacher is None and side.text_teacher is None
    assert side.image_scene is None and side.text_scene is None  # no scene codes in the batch
    for key in ("image_features", "text_features"):
        assert out[key].shape == (B, model.embed_dim) == (B, 128)
        assert torch.isfinite(out[key]).all()
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(B))
    assert out["logit_scale"].shape == () and out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-4)
    assert out["side"].image_side.shape == (B, 128) and torch.isfinite(out["side"].image_side).all()
    assert out["side"].image_side_mask.tolist() == [c > 0 for c in ROI_COUNTS]
    assert (out["side"].image_side[1] == 0).all()
    assert out["side"].text_side.shape == (B, 128) and not out["side"].text_side.requires_grad
    assert out["side"].text_side_mask.tolist() == batch["tags_mask"].tolist()
    torch.testing.assert_close(model.encode_text(batch["tags"]), out["side"].text_side)


def test_encoders_and_preprocess(built: tuple) -> None:
    model, preprocess_train, preprocess_val, tokenizer = built
    size = _image_size(model)
    tokens = tokenizer(["a photo of a red square"])
    assert tokens.shape == (1, 32) and tokens.dtype == torch.long
    img = Image.new("RGB", (97, 71), (200, 10, 10))
    for preprocess in (preprocess_train, preprocess_val):
        assert preprocess(img).shape == (3, size, size)
    images = torch.stack([preprocess_val(img)] * 2)
    raw = model.encode_image(images, normalize=False)
    torch.testing.assert_close(model.encode_image(images), F.normalize(raw, dim=-1))
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(
        model.encode_text(tokens), F.normalize(model.encode_text(tokens, False), dim=-1)
    )


def test_every_trainable_parameter_gets_a_gradient(built: tuple) -> None:
    model, _, _, tokenizer = built
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(_batch(model, tokenizer))
    logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
    labels = torch.arange(B)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    valid = out["side"].image_side_mask  # stand-in for the objective's ROI<->tag InfoNCE
    side = F.normalize(out["side"].image_side[valid], dim=-1) @ out["side"].text_side[valid].T
    loss = loss + F.cross_entropy(side / 0.07, torch.arange(int(valid.sum())))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert model.clip.logit_scale.grad.abs() > 0


def test_float16_regions_give_the_same_side_features_as_their_float32_widening(built: tuple) -> None:
    model, _, _, tokenizer = built
    batch = _batch(model, tokenizer)
    batch["roi"] = batch["roi"].half()  # as a loader batch of float16 sidecars arrives
    wide = {**batch, "roi": batch["roi"].float()}
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["side"].image_side, model(wide)["side"].image_side, rtol=0, atol=0)


def test_sources_switch_the_side_features(built: tuple) -> None:
    model, _, _, tokenizer = built
    batch = _batch(model, tokenizer)
    out = model(batch, image_source="image", text_source="text")
    assert out["side"].image_side is None and out["side"].image_side_mask is None
    assert out["side"].text_side is None and out["side"].text_side_mask is None
    out = model(batch, image_source="image", text_source="tag")
    assert out["side"].image_side is None and out["side"].text_side.shape == (B, 128)
    assert set(IMAGE_SOURCES.names()) == {"image", "roi"} and set(TEXT_SOURCES.names()) == {"tag", "text"}
    with pytest.raises(RegistryError, match="tag"):
        model(batch, text_source="tags")


def test_tag_side_does_not_backpropagate_into_the_text_tower(built: tuple) -> None:
    model, _, _, tokenizer = built
    model.zero_grad(set_to_none=True)
    out = model(_batch(model, tokenizer), image_source="image", text_source="tag")
    (out["image_features"].sum() + out["side"].text_side.sum()).backward()
    assert all(p.grad is None for p in model.clip.transformer.parameters())


def test_pooling_aggregators_keep_the_region_dim_and_roi_source_needs_an_aggregator() -> None:
    model, _, _, tokenizer = build_model(ModelConfig(name="tiny-vit-32"), roi=RoiConfig(aggregation="max"), roi_in_dim=ROI_DIM)
    batch = _batch(model, tokenizer)
    out = model(batch)
    assert out["side"].image_side.shape == (B, ROI_DIM)
    torch.testing.assert_close(out["side"].image_side[0], batch["roi"][0, :2].amax(0))
    bare, _, _, _ = build_model(ModelConfig(name="tiny-vit-32"))
    assert bare.roi is None
    no_regions = LossConfig(image_source="image")  # the loss section decides whether regions are aggregated
    assert build_model(ModelConfig(name="tiny-vit-32"), loss=no_regions, roi_in_dim=ROI_DIM)[0].roi is None
    with pytest.raises(ValueError, match="roi_in_dim"):
        bare(batch)
    assert bare(batch, image_source="image")["side"].image_side is None


def test_logit_scale_is_clamped_at_100() -> None:
    model, _, _, _ = build_model(ModelConfig(name="tiny-vit-32"))
    with torch.no_grad():
        model.clip.logit_scale.fill_(math.log(1000.0))
    assert model.logit_scale.item() == pytest.approx(100.0)


def test_count_parameters(built: tuple) -> None:
    model, _, _, _ = built
    counts = count_parameters(model)
    parts = ("image", "text", "token_embedding", "logit", "roi")
    assert sum(counts[k] for k in parts) == counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["token_embedding"] == 49408 * 128
    assert counts["logit"] == 1 and counts["roi"] > 0 and counts["trainable"] == counts["total"]
    assert counts["image"] == sum(p.numel() for p in model.clip.visual.parameters())


def test_frozen_roi_is_not_trainable() -> None:
    model, _, _, _ = build_model(
        ModelConfig(name="tiny-vit-32"), roi=RoiConfig(aggregation="mhsa", train="frozen"), roi_in_dim=ROI_DIM
    )
    counts = count_parameters(model)
    assert not model.roi.learns and counts["roi"] > 0
    assert counts["trainable"] == counts["total"] - counts["roi"]


def test_refuses_unknown_and_schema_names() -> None:
    with pytest.raises(ValueError, match="tiny-vit"):
        build_model(ModelConfig(name="tiny-vitt"))
    with pytest.raises(ValueError, match="hf-hub"):
        build_model(ModelConfig(name="hf-hub:timm/ViT-B-16-SigLIP"))


def test_builtin_open_clip_config_builds_by_name() -> None:
    model, _, preprocess_val, tokenizer = build_model(ModelConfig(name="RN50"))
    assert model.embed_dim == 1024 and model.roi is None
    assert tokenizer(["x"]).shape == (1, 77)
    assert count_parameters(model)["image"] > 30_000_000


@pytest.mark.integration
def test_vit_b_32_runs_forward() -> None:
    model, _, _, tokenizer = build_model(ModelConfig(name="ViT-B-32"))
    with torch.no_grad():
        feats = model.encode_image(torch.randn(2, 3, 224, 224))
        text = model.encode_text(tokenizer(["a cat", "a dog"]))
    assert feats.shape == text.shape == (2, 512)


def test_low_precision_weights_take_float32_inputs() -> None:
    model, _, _, tokenizer = build_model(
        ModelConfig(name="tiny-vit-32"), roi=RoiConfig(aggregation="mhsa"), roi_in_dim=ROI_DIM, precision="pure_bf16"
    )
    out = model(_batch(model, tokenizer))
    assert out["image_features"].dtype == out["side"].image_side.dtype == torch.bfloat16
    feats = (out["image_features"], out["text_features"], out["side"].image_side)
    assert all(torch.isfinite(x.float()).all() for x in feats)


def test_trimmed_text_encoding_equals_open_clip_full_context() -> None:
    """Cutting all-pad trailing columns leaves open_clip's EOT-pooled text features unchanged (grads too)."""
    from softclip.models import trim_padding

    torch.manual_seed(0)
    model, _, _, tokenizer = build_model(ModelConfig(name="tiny-vit-32"))
    tokens = tokenizer(["a red square", "two blue circles and a small green star", ""])
    assert trim_padding(tokens).shape[1] < tokens.shape[1]
    assert torch.equal(trim_padding(tokens), tokens[:, : trim_padding(tokens).shape[1]])
    ours = model.encode_text(tokens, normalize=True)
    ours.sum().backward()
    grad_ours = model.clip.token_embedding.weight.grad.clone()
    model.zero_grad()
    full = model.clip.encode_text(tokens, normalize=True)
    full.sum().backward()
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_ours, model.clip.token_embedding.weight.grad, atol=1e-5, rtol=1e-5)
    assert trim_padding(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 1)
