"""SynthScenes end to end on a tiny spec: determinism, on-disk structure per layout.py, caching, atomicity."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from softclip.data import layout
from softclip.data.synth import SynthConfig, generate
from softclip.data.synth.base import SETS, OutputSet

TINY = dict(
    n_train=96, samples_per_shard=40, noise=0.25, n_zeroshot_per_class=2, n_retrieval_images=12, n_landmarks=3,
    n_instance_distractors=4, n_copydays_originals=3, n_copydays_distractors=3, n_whitening=2,
    detector={"roi_dim": 16, "missed_boxes": 0.4},
)


def tiny_spec(**overrides) -> SynthConfig:
    return SynthConfig.preset("smoke", **{**TINY, **overrides})


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "data"
    return root, generate(root, tiny_spec(), seed=3)


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    root, _ = dataset
    again = tmp_path / "again"
    generate(again, tiny_spec(), seed=3)
    reference = file_hashes(root)
    assert file_hashes(again) == reference and len(reference) > 100
    other = tmp_path / "other"
    generate(other, tiny_spec(), seed=4)
    changed = {k for k, v in file_hashes(other).items() if reference.get(k) != v}
    assert any(k.startswith(layout.TRAIN_DIR) and k.endswith(".tar") for k in changed)
    assert f"{layout.RETRIEVAL_DIR}/{layout.KARPATHY_FILE}" in changed and layout.CARD_JSON in changed


def test_workers_do_not_change_bytes(dataset, tmp_path):
    root, _ = dataset
    generate(tmp_path / "par", tiny_spec(), seed=3, workers=2)
    assert file_hashes(tmp_path / "par") == file_hashes(root)


def test_train_shards(dataset):
    root, card = dataset
    spec = tiny_spec()
    train = root / layout.TRAIN_DIR
    sizes = json.loads((train / layout.SIZES_FILE).read_text())
    assert list(sizes) == ["00000.tar", "00001.tar", "00002.tar"] and sum(sizes.values()) == spec.n_train
    keys, ks, noisy = [], [], 0
    for shard, count in sizes.items():
        assert json.loads((train / shard.replace(".tar", "_stats.json")).read_text())["successes"] == count
        samples = read_shard(train / shard)
        assert len(samples) == count
        for key, parts in samples.items():
            assert set(parts) == {"jpg", "txt", "json", layout.ROI_EXT, layout.TAGS_EXT}
            meta = json.loads(parts["json"])
            assert meta["key"] == key and meta["caption"] == parts["txt"].decode()
            img = Image.open(io.BytesIO(parts["jpg"]))
            assert img.mode == "RGB" and img.size == (meta["width"], meta["height"]) == (spec.image_size,) * 2
            roi = np.load(io.BytesIO(parts[layout.ROI_EXT]), allow_pickle=False)
            tags = json.loads(parts[layout.TAGS_EXT])
            assert roi.dtype == np.float16 and roi.ndim == 2 and roi.shape[1] == spec.detector.roi_dim
            assert roi.shape[0] == len(tags["tags"]) == len(tags["boxes"])
            if roi.shape[0]:
                np.testing.assert_allclose(roi[:, -6:-2].astype(np.float32),
                                           np.array(tags["boxes"]) / spec.image_size, atol=2e-3)
            assert meta["caption_noisy"] == (meta["caption_owner"] != key)
            assert meta["caption_noisy"] or meta["caption_describes_image"]
            assert 1 <= len(meta["objects"]) <= spec.max_objects
            keys.append(key)
            ks.append(roi.shape[0])
            noisy += meta["caption_noisy"]
    assert keys == [f"{i:09d}" for i in range(spec.n_train)]
    assert 0 in ks and max(ks) > 1  # zero-region images occur (missed boxes)
    assert card["sets"]["train"]["noisy_caption_fraction"] == noisy / spec.n_train
    assert card["sets"]["train"]["regions"]["zero_region_fraction"] == pytest.approx(ks.count(0) / len(ks), abs=1e-6)


def test_zeroshot_folder(dataset):
    root, _ = dataset
    spec = tiny_spec()
    zs = root / layout.ZEROSHOT_DIR
    names = (zs / layout.CLASSNAMES_FILE).read_text().splitlines()
    folders = sorted(p.name for p in (zs / "test").iterdir())
    assert len(names) == spec.n_shapes * spec.n_colours and names == [f.replace("_", " ") for f in folders]
    assert all(len(list((zs / "test" / f).glob("*.jpg"))) == spec.n_zeroshot_per_class for f in folders)
    attrs = json.loads((zs / layout.ATTRIBUTES_FILE).read_text())
    assert list(attrs) == names and all(attrs[n] == dict(zip(("colour", "shape"), n.split(), strict=True))
                                        for n in names)
    templates = (zs / layout.TEMPLATES_FILE).read_text().splitlines()
    assert 3 <= len(templates) < 80 and all("{}" in t for t in templates)


def _describes(sentence: dict, objects: list[dict]) -> bool:
    """Independent statement of the relevance rule over the JSON ground truth."""
    claim = sentence["mentions"]
    if claim["count"] is not None and claim["count"] != len(objects):
        return False
    return all(any(o["shape"] == m["shape"] and o["colour"] == m["colour"] and m["size"] in (None, o["size"])
                   for o in objects) for m in claim["mentions"])


def test_retrieval_karpathy_and_relevance(dataset):
    root, _ = dataset
    ret = root / layout.RETRIEVAL_DIR
    images = json.loads((ret / layout.KARPATHY_FILE).read_text())["images"]
    assert len(images) == tiny_spec().n_retrieval_images
    sentences = []
    for img in images:
        assert img["split"] == "test" and len(img["sentences"]) == 5
        assert len({s["raw"] for s in img["sentences"]}) == 5
        assert (ret / img["filepath"] / img["filename"]).is_file()
        sentences += [(s, img) for s in img["sentences"]]
    rel = json.loads((ret / layout.RELEVANCE_FILE).read_text())["captions_of_image"]
    assert len(rel) == len(images)
    cap_index = 0
    for i, img in enumerate(images):
        own = list(range(cap_index, cap_index + 5))
        cap_index += 5
        assert set(own) <= set(rel[i])
        truth = [j for j, (s, _) in enumerate(sentences) if _describes(s, img["objects"])]
        assert rel[i] == truth
    assert sum(len(r) for r in rel) > 5 * len(images)  # many-to-many: foreign captions also describe images


class OnlyBuiltinsAndNumpy(pickle.Unpickler):
    allowed_builtins = {"list", "dict", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bool"}

    def find_class(self, module, name):
        if module == "builtins" and name in self.allowed_builtins:
            return getattr(builtins, name)
        if module.split(".")[0] == "numpy" and name in {"_reconstruct", "ndarray", "dtype", "scalar"}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def test_instance_revisitop(dataset):
    root, _ = dataset
    spec = tiny_spec()
    inst = root / layout.INSTANCE_DIR
    raw = (inst / f"gnd_{layout.INSTANCE_NAME}.pkl").read_bytes()
    assert raw[:2] == b"\x80\x04"  # protocol 4
    gnd = OnlyBuiltinsAndNumpy(io.BytesIO(raw)).load()
    imlist, qimlist = gnd["imlist"], gnd["qimlist"]
    n_db = spec.n_landmarks * (spec.n_easy_views + spec.n_hard_views + spec.n_junk_views) + spec.n_instance_distractors
    assert len(imlist) == len(set(imlist)) == n_db and len(qimlist) == len(gnd["gnd"]) == spec.n_landmarks
    for name in imlist + qimlist:
        assert (inst / "jpg" / f"{name}.jpg").is_file()
    seen = set()
    for g in gnd["gnd"]:
        easy, hard, junk = set(g["easy"]), set(g["hard"]), set(g["junk"])
        assert easy or hard
        assert not (easy & hard or easy & junk or hard & junk)
        assert all(0 <= i < n_db for i in easy | hard | junk)
        assert (len(easy), len(hard), len(junk)) == (spec.n_easy_views, spec.n_hard_views, spec.n_junk_views)
        assert not seen & (easy | hard | junk)
        seen |= easy | hard | junk
        x1, y1, x2, y2 = g["bbx"]
        assert 0 <= x1 < x2 <= spec.image_size and 0 <= y1 < y2 <= spec.image_size


def test_copydays_layout(dataset):
    root, card = dataset
    spec = tiny_spec()
    cd = root / layout.COPYDAYS_DIR
    for block in range(spec.n_copydays_originals):
        assert (cd / "original" / f"{block:04d}00.jpg").is_file()
        for v in range(1, spec.n_copydays_strong + 1):
            assert (cd / "strong" / f"{block:04d}{v:02d}.jpg").is_file()
        for q in spec.copydays_jpeg_qualities:
            assert (cd / "jpegqual" / str(q) / f"{block:04d}01.jpg").is_file()
        for pct in spec.copydays_crop_pcts:
            crop = Image.open(cd / "crops" / str(pct) / f"{block:04d}01.jpg")
            assert crop.size[0] * crop.size[1] == pytest.approx(spec.image_size**2 * (1 - pct / 100), rel=0.15)
    assert len(list((cd / layout.COPYDAYS_DISTRACTORS).glob("*.jpg"))) == spec.n_copydays_distractors
    assert len(list((cd / layout.COPYDAYS_WHITENING).glob("*.jpg"))) == spec.n_whitening
    assert set(layout.COPYDAYS_BLOCKS) <= {p.name for p in cd.iterdir()}


def test_card(dataset):
    root, card = dataset
    spec = tiny_spec()
    assert json.loads((root / layout.CARD_JSON).read_text()) == card
    assert card["seed"] == 3 and SynthConfig.model_validate(card["spec"]) == spec
    assert card["object_types"] == spec.n_shapes * spec.n_colours
    assert card["expected_false_negatives_per_batch"] == card["sets"]["train"]["false_negatives"]["expected_per_batch"]
    assert card["expected_false_negatives_per_batch"] > 0
    assert card["sets"]["retrieval"]["captions"] == 5 * spec.n_retrieval_images
    assert set(card["disk"]) == {s.folder for s in map(SETS.get, SETS.names())}
    assert "timing" not in json.dumps(card)
    readme = (root / layout.CARD_MD).read_text()
    assert str(card["object_types"]) in readme and "expected other captions" in readme


def test_cache_hit_rewrites_nothing_and_changed_spec_regenerates(tmp_path):
    root = tmp_path / "data"
    spec = tiny_spec(n_train=20)
    card = generate(root, spec, seed=1)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate(root, spec, seed=1) == card  # a cache hit: nothing below is rewritten
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    changed = generate(root, tiny_spec(n_train=21), seed=1)
    assert changed["spec"]["n_train"] == 21 and sum(json.loads((root / "train" / "sizes.json").read_text()).values()) == 21
    assert generate(root, tiny_spec(n_train=21), seed=2)["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging or old folders left behind


def test_failed_generation_leaves_no_half_dataset(tmp_path, monkeypatch):
    root = tmp_path / "data"
    first = generate(root, tiny_spec(n_train=10), seed=1)
    before = file_hashes(root)
    stale = tmp_path / ".data.tmp-999999999-dead"  # staging of a killed run
    stale.mkdir()

    def boom(spec, seed, root, unit):
        raise RuntimeError("killed")

    broken = SETS.get("copydays")
    monkeypatch.setitem(SETS._items, "copydays", OutputSet(broken.name, broken.folder, broken.units, boom, broken.finalize))
    with pytest.raises(RuntimeError, match="killed"):
        generate(root, tiny_spec(n_train=11), seed=1)
    assert file_hashes(root) == before and json.loads((root / layout.CARD_JSON).read_text()) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a SynthScenes dataset"):
        generate(tmp_path / "mine", tiny_spec(n_train=5), seed=0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_loader_carries_scene_codes_whose_truth_is_the_generators(dataset):
    """With ``scenes=True`` each batch holds the samples' scene codes; the relevance they imply matches each
    sample's own ``caption_describes_image`` flag (noisy captions describe their image only by chance)."""
    import torch

    from softclip.config import DataConfig
    from softclip.data.loader import build_train_loader
    from softclip.objective.oracle import relevance

    root, _ = dataset
    meta = {}
    for shard in sorted((root / layout.TRAIN_DIR).glob("*.tar")):
        for key, parts in read_shard(shard).items():
            meta[key] = json.loads(parts["json"])
    data = DataConfig(source="wds", root=str(root), kmax=4)
    args = dict(preprocess=lambda im: torch.zeros(3, 2, 2), tokenizer=lambda texts: torch.zeros(len(texts), 4, dtype=torch.long),
                batch_size=16, roi_dim=16, seed=0)  # fmt: skip
    batch = next(iter(build_train_loader(data, scenes=True, **args)))
    from softclip.data.synth.captions import MAX_MENTIONS, N_TYPES

    assert batch["scene_image"].shape == (16, N_TYPES + 1) and batch["scene_text"].shape == (16, 2 * MAX_MENTIONS + 1)
    truth = relevance(batch["scene_image"], batch["scene_text"]).diagonal().tolist()
    assert truth == [meta[k]["caption_describes_image"] for k in batch["key"]]
    assert [int(c) for c in batch["scene_image"][:, -1]] == [len(meta[k]["objects"]) for k in batch["key"]]
    assert "scene_image" not in next(iter(build_train_loader(data, **args)))  # only when asked for
