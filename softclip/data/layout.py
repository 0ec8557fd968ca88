"""On-disk layout shared by the SynthScenes writer and the readers.

The synthetic benchmark is written in the formats real datasets ship in, so one set of readers serves both.
Every path name used by more than one module lives here.

Training (img2dataset webdataset layout, plus SoftCLIP's ROI sidecars), under ``DIR/train/``:
    ``{shard}.tar`` named ``00000.tar``, ``00001.tar``, ... each holding per sample ``{key}.jpg`` (RGB JPEG),
    ``{key}.txt`` (caption, UTF-8), ``{key}.json`` (img2dataset metadata: key, caption, width, height; the
    synthetic writer adds its ground truth), ``{key}.roi.npy`` (float16 [K, D], K >= 0 regions; the last 6 of
    the D columns are VinVL's box geometry x1/W, y1/H, x2/W, y2/H, w/W, h/H) and ``{key}.tags.json``
    (``{"tags": [str] * K, "boxes": [[x1, y1, x2, y2]] * K}`` in pixels). ``sizes.json`` maps shard file name
    to its sample count; ``{shard}_stats.json`` as img2dataset writes it.

Zero-shot (ImageFolder), under ``DIR/zeroshot/``:
    ``test/{folder}/*.jpg``; ``classnames.txt`` one class name per line in sorted-folder order;
    ``templates.txt`` prompt templates with ``{}`` for the class name; ``attributes.json`` maps each class
    name to its attributes (``{"shape": ..., "colour": ...}``) for per-attribute scores.

Retrieval (Karpathy split JSON), under ``DIR/retrieval/``:
    ``dataset.json`` = ``{"dataset": name, "images": [{"filename", "imgid", "split", "sentences": [{"raw"}]}]}``,
    images under ``images/``; ``relevance.json`` = ``{"captions_of_image": [[caption_index, ...]] }`` over the
    test split's images and captions in file order (which captions truly describe which images).

Instance retrieval (revisitop layout), under ``DIR/instance/``:
    ``gnd_{name}.pkl`` (pickle of builtins and numpy arrays only) = ``{"imlist": [str], "qimlist": [str],
    "gnd": [{"bbx": [x1, y1, x2, y2], "easy": [int], "hard": [int], "junk": [int]}]}``; images
    ``jpg/{name}.jpg`` for every name in imlist and qimlist.

Copy detection (Copydays layout), under ``DIR/copydays/``:
    ``original/{block:04d}00.jpg``; ``strong/{block:04d}{v:02d}.jpg`` (v >= 1); ``jpegqual/{q}/{block:04d}{v:02d}.jpg``;
    ``crops/{pct}/{block:04d}{v:02d}.jpg``; ``distractors/*.jpg`` (added to the database);
    ``whitening/*.jpg`` (a separate set to learn PCA-whitening on). A query matches the original whose
    name shares its first four digits (the block).

Dataset card: ``DIR/card.json`` (every generator knob, counts, seed, version) and ``DIR/README.md``.
"""

from __future__ import annotations

TRAIN_DIR = "train"
SIZES_FILE = "sizes.json"
ROI_EXT = "roi.npy"
TAGS_EXT = "tags.json"
BOX_GEOMETRY_DIMS = 6

ZEROSHOT_DIR = "zeroshot"
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "templates.txt"
ATTRIBUTES_FILE = "attributes.json"

RETRIEVAL_DIR = "retrieval"
KARPATHY_FILE = "dataset.json"
RELEVANCE_FILE = "relevance.json"

INSTANCE_DIR = "instance"
INSTANCE_NAME = "synthoxford"

COPYDAYS_DIR = "copydays"
COPYDAYS_BLOCKS = ("strong", "jpegqual", "crops")
COPYDAYS_DISTRACTORS = "distractors"
COPYDAYS_WHITENING = "whitening"

CARD_JSON = "card.json"
CARD_MD = "README.md"
