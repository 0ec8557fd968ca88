"""Zero-shot text encoding at each batch's own length: open_clip's causal, EOT-pooled text towers give the same
embeddings on tokens cut after the batch's longest text as on the full 77-token context, for our models (tiny
presets, RN50, ViT-B-32) and open_clip's ``CustomTextCLIP``; every other tower falls back to the full pass; the
harness encodes prompts sorted by length and writes each embedding back to its own row."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from softclip.config import ModelConfig
from softclip.evaluation.embed import Embedder, length_order
from softclip.evaluation.templates import IMAGENET_TEMPLATES, imagenet1k
from softclip.models import build_model, causal_text_tower, encode_text_trimmed, trim_padding


def imagenet_prompts() -> list[str]:
    """Real ImageNet prompts of different token lengths: the shortest, a middle and the longest class name in the
    shortest, a middle and the longest of CLIP's 80 templates."""
    names = sorted(imagenet1k(), key=len)
    templates = sorted(IMAGENET_TEMPLATES, key=len)
    return [t.replace("{}", c) for c in (names[0], names[500], names[-1]) for t in (templates[0], templates[40],
                                                                                    templates[-1])]  # fmt: skip


@pytest.mark.parametrize("name", ["tiny-vit-32", "tiny-rn-32", "RN50", "ViT-B-32"])
def test_trimmed_encoding_equals_the_full_context_pass(name: str) -> None:
    torch.manual_seed(0)
    model, _, _, tokenizer = build_model(ModelConfig(name=name))
    model.eval()
    tokens = tokenizer(imagenet_prompts())
    lengths = (tokens != 0).sum(dim=1)
    assert len(set(lengths.tolist())) >= 4 and int(lengths.max()) < tokens.shape[1]  # really different lengths
    assert causal_text_tower(model.clip) is not None
    with torch.no_grad():
        full = model.clip.encode_text(tokens, normalize=True)  # open_clip's own 77-token pass
        ours = model.encode_text(tokens, normalize=True)
        single = torch.cat([model.encode_text(tokens[i : i + 1], normalize=True) for i in range(len(tokens))])
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, full, atol=1e-5, rtol=1e-5)  # each row cut to its own length


def _custom_text_clip(**text_cfg) -> open_clip.CustomTextCLIP:
    torch.manual_seed(0)
    vision = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16}
    text = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, **text_cfg}
    return open_clip.CustomTextCLIP(embed_dim=16, vision_cfg=vision, text_cfg=text).eval()


def test_custom_text_clip_with_a_causal_eot_pooled_tower_is_trimmed_exactly() -> None:
    clip = _custom_text_clip(pool_type="argmax")
    tower = causal_text_tower(clip)
    assert tower is not None and tower.module is clip.text
    tokens = open_clip.get_tokenizer("RN50")(imagenet_prompts())
    with torch.no_grad():
        full = clip.encode_text(tokens, normalize=True)
        cut = encode_text_trimmed(tower, trim_padding(tokens, tower.pad_id), normalize=True)
    assert trim_padding(tokens).shape[1] < tokens.shape[1]
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "text_cfg", [{"no_causal_mask": True}, {"pool_type": "last"}, {"pool_type": "first"}, {"embed_cls": True}]
)
def test_other_custom_text_towers_fall_back_to_the_full_pass(text_cfg: dict) -> None:
    assert causal_text_tower(_custom_text_clip(**text_cfg)) is None


@pytest.mark.parametrize("change", ["no_mask", "last", "first"])
def test_clip_without_causal_mask_or_eot_pooling_falls_back(change: str) -> None:
    """A tower that reads padded positions keeps the full context: the wrapper's output is open_clip's own."""
    torch.manual_seed(0)
    model, _, _, tokenizer = build_model(ModelConfig(name="tiny-vit-32"))
    model.eval()
    if change == "no_mask":
        model.clip.attn_mask = None  # as a bidirectional text tower has it
    else:
        model.clip.text_pool_type = change
    assert causal_text_tower(model.clip) is None
    tokens = tokenizer(imagenet_prompts())
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), model.clip.encode_text(tokens, normalize=True))


def test_length_order_sorts_rows_by_their_last_real_token() -> None:
    tokens = torch.tensor([[5, 7, 9, 0], [5, 0, 0, 0], [5, 7, 9, 8], [0, 0, 0, 0], [5, 7, 0, 0], [5, 0, 0, 0]])
    assert length_order(tokens).tolist() == [3, 1, 5, 4, 0, 2]  # stable among equal lengths


def test_embedder_encodes_sorted_batches_and_restores_the_row_order(tiny_model) -> None:
    model, preprocess, tokenizer = tiny_model
    prompts = imagenet_prompts()[::-1] + imagenet_prompts()[:3]
    seen: list[int] = []

    class Recording(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
            seen.append(int((tokens != 0).sum(dim=1).max()))
            return self.inner.encode_text(tokens, normalize=normalize)

    emb = Embedder(preprocess=preprocess, tokenizer=tokenizer, batch_size=4, sort_texts=True).texts(
        Recording(), prompts)
    with torch.no_grad():
        one_by_one = np.concatenate([model.clip.encode_text(tokenizer([p]), normalize=True).numpy() for p in prompts])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5, rtol=1e-5)
    assert seen == sorted(seen) and len(seen) == 3  # batches go shortest first


def test_the_embedder_keeps_the_given_order_unless_asked_to_sort(tiny_model) -> None:
    """Off by default: committed results repeat to the last digit; the paper suite turns it on."""
    from softclip.evaluation.suite import read_suite
    from softclip.resources import data_file

    model, preprocess, tokenizer = tiny_model
    prompts = imagenet_prompts()[::-1][:8]
    seen: list[int] = []

    class Recording(torch.nn.Module):
        def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
            seen.append(int((tokens != 0).sum(dim=1).max()))
            return model.encode_text(tokens, normalize=normalize)

    Embedder(preprocess=preprocess, tokenizer=tokenizer, batch_size=1).texts(Recording(), prompts)
    assert seen == [int((tokenizer([p]) != 0).sum()) for p in prompts]  # one by one, in the given order
    assert read_suite(data_file("eval/paper.yaml"))[0].sort_texts
    assert not read_suite(data_file("eval/synthetic.yaml"))[0].sort_texts
