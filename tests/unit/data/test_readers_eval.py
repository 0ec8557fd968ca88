"""Evaluation readers: ImageFolder, Karpathy JSON, Copydays, and the image-list dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softclip.data.badsamples import BadSamples, DataError
from softclip.data.readers import (
    EVAL_READERS,
    iter_image_batches,
    read_copydays,
    read_imagefolder,
    read_karpathy,
)
from tests.unit.data.readers_fixtures import jpeg_bytes, preprocess


def test_registry_names():
    assert EVAL_READERS.names() == ["copydays", "imagefolder", "karpathy", "revisitop"]
    assert EVAL_READERS.get("karpathy") is read_karpathy


def make_imagefolder(root):
    for c, folder in enumerate(["b_square", "a_circle", "c_star"]):
        (root / "test" / folder).mkdir(parents=True)
        for j in range(c + 1):
            (root / "test" / folder / f"{j}.jpg").write_bytes(jpeg_bytes(10 * c + j))
    (root / "test" / "a_circle" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_round_trip(tmp_path):
    root = make_imagefolder(tmp_path)
    data = read_imagefolder(root)
    assert data.folders == data.classnames == ["a_circle", "b_square", "c_star"]
    assert data.labels.tolist() == [0, 0, 1, 2, 2, 2] and len(data.paths) == 6
    assert data.paths[2].parent.name == "b_square"
    assert data.templates is None and data.attributes is None
    (root / "classnames.txt").write_text("circle\nsquare\nstar\n")
    (root / "templates.txt").write_text("a photo of a {}.\n\na drawing of a {c}.\n")
    (root / "attributes.json").write_text(json.dumps({"circle": {"shape": "circle"}}))
    data = read_imagefolder(root, "test")
    assert data.classnames == ["circle", "square", "star"]
    assert data.templates == ["a photo of a {}.", "a drawing of a {}."]
    assert data.attributes == {"circle": {"shape": "circle"}}


def test_imagefolder_errors(tmp_path):
    root = make_imagefolder(tmp_path)
    with pytest.raises(DataError, match=r"split 'val'.*folders there: \['test'\]"):
        read_imagefolder(root, "val")
    with pytest.raises(DataError, match="nowhere"):
        read_imagefolder(tmp_path / "nowhere")
    (root / "classnames.txt").write_text("one\ntwo\n")
    with pytest.raises(DataError, match="2 class names for 3 folders"):
        read_imagefolder(root)
    (root / "classnames.txt").unlink()
    (root / "templates.txt").write_text("a photo of a {}.\nno placeholder\n")
    with pytest.raises(DataError, match="templates.txt:2"):
        read_imagefolder(root)


def make_karpathy(root, relevance=True):
    (root / "images").mkdir(parents=True)
    images = []
    for i in range(4):
        (root / "images" / f"{i}.jpg").write_bytes(jpeg_bytes(i))
        split = "test" if i < 3 else "train"
        sentences = [{"raw": f" image {i} caption {j} ", "tokens": []} for j in range(i + 1)]
        images.append({"filename": f"{i}.jpg", "imgid": i, "split": split, "sentences": sentences})
    (root / "dataset.json").write_text(json.dumps({"dataset": "synth", "images": images}))
    if relevance:
        (root / "relevance.json").write_text(json.dumps({"captions_of_image": [[0, 1], [1, 2], [3, 4, 5]]}))
    return root / "dataset.json"


def test_karpathy_round_trip(tmp_path):
    data = read_karpathy(make_karpathy(tmp_path))
    assert data.dataset == "synth" and data.split == "test"
    assert [p.name for p in data.image_paths] == ["0.jpg", "1.jpg", "2.jpg"]
    assert data.captions[0] == "image 0 caption 0" and len(data.captions) == 6
    assert data.text_to_image.tolist() == [0, 1, 1, 2, 2, 2] and data.text_to_image.dtype == np.int64
    assert data.image_to_texts == [[0], [1, 2], [3, 4, 5]]
    assert data.relevance == [[0, 1], [1, 2], [3, 4, 5]]
    assert read_karpathy(tmp_path / "dataset.json", tmp_path / "images", split="train").captions[-1].endswith("3")


def test_karpathy_coco_filepath_and_errors(tmp_path):
    doc = {"images": [{"filepath": "val2014", "filename": "x.jpg", "split": "test", "sentences": [{"raw": "a"}]}]}
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"1 of 1 images are missing, e.g. .*val2014/x.jpg"):
        read_karpathy(tmp_path / "coco.json", tmp_path)
    (tmp_path / "val2014").mkdir()
    (tmp_path / "val2014" / "x.jpg").write_bytes(jpeg_bytes(0))
    data = read_karpathy(tmp_path / "coco.json")  # images_root defaults to the JSON's folder
    assert data.image_paths == [tmp_path / "val2014" / "x.jpg"] and data.relevance is None
    with pytest.raises(DataError, match=r"split 'val'.*\['test'\]"):
        read_karpathy(tmp_path / "coco.json", tmp_path, split="val")
    with pytest.raises(DataError, match="missing.json"):
        read_karpathy(tmp_path / "missing.json", tmp_path)
    path = make_karpathy(tmp_path / "k", relevance=False)
    (tmp_path / "k" / "relevance.json").write_text(json.dumps({"captions_of_image": [[0], [9], [1]]}))
    with pytest.raises(DataError, match="outside"):
        read_karpathy(path)


def make_copydays(root, distractors=2):
    for b in (1, 2, 3):
        (root / "original").mkdir(parents=True, exist_ok=True)
        (root / "original" / f"{b:04d}00.jpg").write_bytes(jpeg_bytes(b))
        for v in (1, 2):
            for folder in ("strong", "jpegqual/50", "jpegqual/75", "crops/30"):
                (root / folder).mkdir(parents=True, exist_ok=True)
                (root / folder / f"{b:04d}{v:02d}.jpg").write_bytes(jpeg_bytes(100 * b + v))
    for name in ("distractors", "whitening"):
        (root / name).mkdir()
        for i in range(distractors):
            (root / name / f"{name}{i}.jpg").write_bytes(jpeg_bytes(1000 + i))
    return root


def test_copydays_round_trip(tmp_path):
    data = read_copydays(make_copydays(tmp_path))
    assert data.num_originals == 3 and len(data.database) == 5
    assert [p.name for p in data.database[:3]] == ["000100.jpg", "000200.jpg", "000300.jpg"]
    assert data.database[3].parent.name == "distractors" and len(data.whitening) == 2
    assert set(data.blocks) == {"strong", "jpegqual", "crops"}
    strong = data.blocks["strong"]
    assert len(strong.paths) == 6 and strong.gt.tolist() == [0, 0, 1, 1, 2, 2] and set(strong.levels) == {""}
    jq = data.blocks["jpegqual"]
    assert len(jq.paths) == 12 and set(jq.levels) == {"50", "75"}
    for p, g in zip(jq.paths, jq.gt, strict=True):
        assert data.database[g].stem[:4] == p.stem[:4]
    only = read_copydays(tmp_path, blocks=("strong",), distractors=False, whitening=False)
    assert len(only.database) == 3 and list(only.blocks) == ["strong"] and only.whitening == []


def test_copydays_errors(tmp_path):
    root = make_copydays(tmp_path)
    with pytest.raises(DataError, match="rotations"):
        read_copydays(root, blocks=("rotations",))
    with pytest.raises(DataError, match="elsewhere"):
        read_copydays(root, distractors=tmp_path / "elsewhere")
    (root / "strong" / "099901.jpg").write_bytes(jpeg_bytes(5))
    with pytest.raises(DataError, match="099901.jpg has no original"):
        read_copydays(root)


def test_image_batches_skip_and_count_corrupt_images(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(jpeg_bytes(i) if i != 2 else b"garbage")
        paths.append(p)
    paths.append(tmp_path / "missing.jpg")
    bad = BadSamples(max_fraction=None)
    out = list(iter_image_batches(paths, preprocess, batch_size=4, bad=bad, source="gallery"))
    indices = sum((idx.tolist() for _, idx in out), [])
    assert indices == [0, 1, 3, 4] and out[0][0].shape == (3, 3, 4, 4)
    assert bad.counts == {"corrupt_image": 1, "missing_image": 1}
    assert {r.key for r in bad.examples} == {str(paths[2]), str(paths[5])}
    assert all(r.source == "gallery" for r in bad.examples)
