"""Captions from templates, and the truth of "caption c describes image i".

A caption mentions some or all objects of its scene (colour and shape always, size sometimes). Count templates
("two objects: ...") are used only when every object is named. Caption c describes image i iff every object it
mentions is present in i with the mentioned attributes, and, for a count template, i holds exactly that many
objects. So pairs are many-to-many by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from softclip.data.synth.scenes import Obj
from softclip.data.synth.spec import COLOURS, SHAPES, SIZES, SynthConfig

LIST_TEMPLATES: tuple[str, ...] = (
    "a photo of {objs}.",
    "there is {objs}.",
    "an image showing {objs}.",
    "a picture of {objs}.",
    "{objs} on a textured background.",
    "a drawing of {objs}.",
    "a scene with {objs}.",
    "a rendering of {objs}.",
)
COUNT_TEMPLATES: tuple[str, ...] = (
    "{count} {object}: {objs}.",
    "a photo of {count} {shape}: {objs}.",
)
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
N_TYPES = len(SHAPES) * len(COLOURS)


@dataclass(frozen=True)
class Mention:
    """One object named by a caption; ``size`` is -1 when the caption does not name it."""

    shape: int
    colour: int
    size: int

    def phrase(self) -> str:
        words = ([SIZES[self.size]] if self.size >= 0 else []) + [COLOURS[self.colour], SHAPES[self.shape]]
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article, *words])

    def to_json(self) -> dict:
        return {"shape": SHAPES[self.shape], "colour": COLOURS[self.colour],
                "size": SIZES[self.size] if self.size >= 0 else None}


@dataclass(frozen=True)
class Caption:
    """A caption's text and what it claims: the mentioned objects and, for count templates, the count."""

    text: str
    mentions: tuple[Mention, ...]
    count: int | None
    subset: bool

    def to_json(self) -> dict:
        return {"mentions": [m.to_json() for m in self.mentions], "count": self.count, "subset": self.subset}


def join_phrases(phrases: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def render(template: str, mentions: Sequence[Mention], count: int | None) -> str:
    objs = join_phrases([m.phrase() for m in mentions])
    if count is None:
        return template.format(objs=objs)
    plural = "s" if count != 1 else ""
    return template.format(objs=objs, count=COUNT_WORDS[count], object="object" + plural, shape="shape" + plural)


def subset_rate(spec: SynthConfig) -> float:
    """Subset-caption probability for a scene of 2+ objects, so that the share over all scenes (object counts
    uniform on 1..max_objects) is ``spec.subset_caption_prob``, capped at 1."""
    if spec.max_objects < 2:
        return 0.0
    return min(1.0, spec.subset_caption_prob * spec.max_objects / (spec.max_objects - 1))


def make_caption(rng: np.random.Generator, spec: SynthConfig, objs: Sequence[Obj],
                 exclude_templates: frozenset[str] = frozenset()) -> tuple[Caption, str]:
    """Caption ``objs``, naming only some of them for a ``spec.subset_caption_prob`` share of all captions.

    Only scenes of 2+ objects can get a subset caption, so their rate is raised to keep the overall share
    (capped at 1). Returns the caption and the template it used; ``exclude_templates`` are skipped while
    others remain.
    """
    n = len(objs)
    subset = n >= 2 and rng.random() < subset_rate(spec)
    k = int(rng.integers(1, n)) if subset else n
    chosen = rng.permutation(n)[:k]
    sizes_named = rng.random(k) < spec.size_mention_prob
    mentions = tuple(Mention(objs[i].shape, objs[i].colour, objs[i].size if named else -1)
                     for i, named in zip(chosen, sizes_named, strict=True))
    pool = LIST_TEMPLATES + (() if subset else COUNT_TEMPLATES)
    allowed = [t for t in pool if t not in exclude_templates] or list(pool)
    template = allowed[int(rng.integers(len(allowed)))]
    count = None if template in LIST_TEMPLATES else n
    return Caption(render(template, mentions, count), mentions, count, bool(subset)), template


def make_captions(rng: np.random.Generator, spec: SynthConfig, objs: Sequence[Obj], n: int) -> list[Caption]:
    """``n`` captions of one image from different templates, distinct texts where possible."""
    caps: list[Caption] = []
    used: set[str] = set()
    for _ in range(n):
        for _attempt in range(10):
            cap, template = make_caption(rng, spec, objs, frozenset(used))
            if cap.text not in {c.text for c in caps}:
                break
        caps.append(cap)
        used.add(template)
    return caps


def describes(caption: Caption, objs: Sequence[Obj]) -> bool:
    """True iff every mentioned object is in ``objs`` with the mentioned attributes (and the count holds)."""
    if caption.count is not None and caption.count != len(objs):
        return False
    have = {(o.shape, o.colour): o.size for o in objs}
    return all((m.shape, m.colour) in have and m.size in (-1, have[(m.shape, m.colour)]) for m in caption.mentions)


def encode_images(scenes: Sequence[Sequence[Obj]]) -> tuple[np.ndarray, np.ndarray]:
    """Images as int8 [I, N_TYPES] (0 absent, 1 + size index present) and object counts int64 [I]."""
    table = np.zeros((len(scenes), N_TYPES), dtype=np.int8)
    for i, objs in enumerate(scenes):
        for o in objs:
            table[i, o.type_index] = 1 + o.size
    return table, np.array([len(s) for s in scenes], dtype=np.int64)


def encode_captions(captions: Sequence[Caption]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Captions as type indices int64 [C, M] (-1 pad), size requirements int8 [C, M] (0 any) and counts [C] (-1 none)."""
    width = max((len(c.mentions) for c in captions), default=0)
    types = np.full((len(captions), width), -1, dtype=np.int64)
    req = np.zeros((len(captions), width), dtype=np.int8)
    for j, cap in enumerate(captions):
        for k, m in enumerate(cap.mentions):
            types[j, k] = m.shape * len(COLOURS) + m.colour
            req[j, k] = 1 + m.size if m.size >= 0 else 0
    counts = np.array([-1 if c.count is None else c.count for c in captions], dtype=np.int64)
    return types, req, counts


MAX_MENTIONS = 5  # SynthConfig.max_objects <= 5: a caption names at most that many objects


def scene_codes(objects: Sequence[dict], mentions: dict) -> tuple[np.ndarray, np.ndarray]:
    """The scene codes of one training sample (:mod:`softclip.objective.oracle`) from its ``.json`` fields.

    Args:
        objects: the ``objects`` list (``{"shape", "colour", "size", ...}`` names).
        mentions: ``caption_mentions`` (``{"mentions": [{"shape", "colour", "size" or None}], "count"}``).

    Returns:
        image code int64 [T + 1] and caption code int64 [2·MAX_MENTIONS + 1].

    Raises:
        KeyError / ValueError: on a name outside the vocabulary or a malformed field.
    """
    image = np.zeros(N_TYPES + 1, dtype=np.int64)
    for o in objects:
        image[SHAPES.index(o["shape"]) * len(COLOURS) + COLOURS.index(o["colour"])] = 1 + SIZES.index(o["size"])
    image[-1] = len(objects)
    named = list(mentions["mentions"])
    if len(named) > MAX_MENTIONS:
        raise ValueError(f"{len(named)} mentions, at most {MAX_MENTIONS}")
    caption = np.full(2 * MAX_MENTIONS + 1, -1, dtype=np.int64)
    caption[MAX_MENTIONS : 2 * MAX_MENTIONS] = 0
    for k, m in enumerate(named):
        caption[k] = SHAPES.index(m["shape"]) * len(COLOURS) + COLOURS.index(m["colour"])
        caption[MAX_MENTIONS + k] = 0 if m.get("size") is None else 1 + SIZES.index(m["size"])
    count = mentions.get("count")
    caption[-1] = -1 if count is None else int(count)
    return image, caption


def describes_matrix(captions: Sequence[Caption], scenes: Sequence[Sequence[Obj]]) -> np.ndarray:
    """Vectorised ``describes``: bool [C, I], entry (c, i) True iff caption c describes image i."""
    table, n_objs = encode_images(scenes)
    types, req, counts = encode_captions(captions)
    ok = np.ones((len(captions), len(scenes)), dtype=bool)
    for k in range(types.shape[1]):
        valid = types[:, k] >= 0
        vals = table[:, np.where(valid, types[:, k], 0)].T  # [C, I]
        r = req[:, k][:, None]
        hit = (vals > 0) & ((r == 0) | (vals == r))
        ok &= hit | ~valid[:, None]
    ok &= (counts[:, None] < 0) | (counts[:, None] == n_objs[None, :])
    return ok
