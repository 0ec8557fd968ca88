"""revisitop ground truth through the restricted unpickler; malicious pickles are refused unexecuted."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from softclip.data.badsamples import DataError
from softclip.data.readers import read_revisitop, restricted_load


def make_revisitop(root, protocol=pickle.DEFAULT_PROTOCOL, name="synthoxford"):
    (root / "jpg").mkdir(parents=True)
    imlist = [f"db{i}" for i in range(6)]
    qimlist = ["q0", "q1"]
    gnd = [
        {"bbx": [1.0, 2.0, 10.0, 12.0], "easy": np.array([0, 2]), "hard": np.array([4]), "junk": np.array([], int)},
        {"bbx": np.array([0, 0, 5, 5], np.float32), "easy": [1], "hard": [], "junk": [3, 5]},
    ]
    for n in imlist + qimlist:
        (root / "jpg" / f"{n}.jpg").write_bytes(b"")
    doc = {"imlist": imlist, "qimlist": qimlist, "gnd": gnd, "extra": (np.float32(1.5), {1, 2}, b"x")}
    with open(root / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(doc, f, protocol=protocol)
    return root


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_round_trip(tmp_path, protocol):
    data = read_revisitop(make_revisitop(tmp_path, protocol), "synthoxford")
    assert data.imlist == [f"db{i}" for i in range(6)] and data.qimlist == ["q0", "q1"]
    assert data.images[3] == tmp_path / "jpg" / "db3.jpg" and data.queries[1] == tmp_path / "jpg" / "q1.jpg"
    g0, g1 = data.gnd
    assert g0["easy"].tolist() == [0, 2] and g0["hard"].tolist() == [4] and g0["junk"].size == 0
    assert g1["junk"].tolist() == [3, 5] and g1["easy"].dtype == np.int64
    assert g0["bbx"].tolist() == [1.0, 2.0, 10.0, 12.0] and g1["bbx"].dtype == np.float64


def test_revisitop_nested_layout_and_errors(tmp_path):
    make_revisitop(tmp_path / "roxford5k", name="roxford5k")
    assert len(read_revisitop(tmp_path, "roxford5k").gnd) == 2  # root/{name}/gnd_{name}.pkl as revisitop ships
    with pytest.raises(DataError, match="gnd_rparis6k.pkl"):
        read_revisitop(tmp_path, "rparis6k")
    (tmp_path / "roxford5k" / "jpg" / "db4.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 8 images are missing, e.g. .*db4.jpg"):
        read_revisitop(tmp_path, "roxford5k")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "jpg").mkdir()
    with open(bad / "gnd_x.pkl", "wb") as f:
        pickle.dump({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [3], "hard": [], "junk": []}]}, f)
    with pytest.raises(DataError, match=r"gnd\[0\].*outside"):
        read_revisitop(bad, "x")


class Exploit:
    """Unpickling this would run a shell command creating ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "jpg").mkdir()
    payload = {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": [], "junk": [], "x": Exploit(marker)}]}
    path = tmp_path / "gnd_evil.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(DataError) as err:
        read_revisitop(tmp_path, "evil")
    msg = str(err.value)
    assert str(path) in msg and ("posix.system" in msg or "os.system" in msg)
    assert not marker.exists()
    # the same payload through plain pickle really would run (proves the test's payload is live)
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_other_globals_and_garbage_are_refused(tmp_path):
    import collections

    p = tmp_path / "od.pkl"
    p.write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(DataError, match="collections.OrderedDict"):
        restricted_load(p)
    p.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataError, match="not a readable pickle"):
        restricted_load(p)
