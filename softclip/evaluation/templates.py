"""Prompt templates for zero-shot classification.

``IMAGENET_TEMPLATES`` are the 80 prompt templates of CLIP's ImageNet prompt ensemble (Radford et al., 2021),
each with ``{}`` where the class name goes. Class names come from the dataset (``classnames.txt``) or from a
named set: ``imagenet1k`` is the list of 1,000 ImageNet class names that CLIP's authors published with their
prompt-engineering notebook (OpenAI, CLIP repository, ``notebooks/Prompt_Engineering_for_ImageNet.ipynb``),
in the sorted-WordNet-id order of the ImageFolder classes, as open_clip ships it
(``open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES``; CLIP_benchmark ships the same list).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from softclip.registry import Registry

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

#: Named template sets a suite can ask for (``templates: imagenet80``).
TEMPLATE_SETS: Registry[tuple[str, ...]] = Registry("zeroshot templates")
TEMPLATE_SETS.register("imagenet80")(IMAGENET_TEMPLATES)
TEMPLATE_SETS.register("single")(("a photo of a {}.",))
#: The 7 of the 80 that CLIP's authors' ImageNet notebook selected (a light periodic classifier: 7k prompts).
TEMPLATE_SETS.register("imagenet7")((
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
))  # fmt: skip


#: Named class-name lists a suite can ask for (``classnames: imagenet1k``), in class-folder order.
CLASSNAME_SETS: Registry[Callable[[], tuple[str, ...]]] = Registry("zeroshot class names")


@CLASSNAME_SETS.register("imagenet1k")
def imagenet1k() -> tuple[str, ...]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


def load_templates(path: str | Path) -> list[str]:
    """Templates from a text file, one per line, ``{}`` (or ``{c}``) marking the class name."""
    from softclip.data.readers.imagefolder import read_templates

    return read_templates(Path(path))
