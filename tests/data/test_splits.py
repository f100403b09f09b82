import json

import numpy as np
import pandas as pd
import pytest

from lumbar_bench.constants import LABEL_COLUMNS
from lumbar_bench.core.errors import SplitError
from lumbar_bench.data.splits import check_covers, load_split, make_split, save_split, subset_studies


@pytest.fixture
def labels() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    codes = rng.choice([0, 1, 2], size=(60, 25), p=[0.8, 0.15, 0.05])
    return pd.DataFrame(
        codes, index=pd.Index(range(1000, 1060), name="study_id"), columns=list(LABEL_COLUMNS)
    )


def test_deterministic_and_seed_dependent(labels):
    a, b, c = make_split(labels, 5, 0), make_split(labels, 5, 0), make_split(labels, 5, 1)
    assert a.assignment == b.assignment and a.digest == b.digest
    assert a.assignment != c.assignment and a.digest != c.digest


def test_every_study_in_exactly_one_fold_and_folds_balanced(labels):
    split = make_split(labels, 5, 0)
    held = [s for f in range(5) for s in split.studies(f)]
    assert sorted(held) == sorted(labels.index)
    assert len(held) == len(set(held))
    sizes = [len(split.studies(f)) for f in range(5)]
    assert max(sizes) - min(sizes) <= 1
    for f in range(5):
        assert not set(split.studies(f)) & set(split.train_studies(f))


def test_severe_reaches_every_fold(labels):
    split = make_split(labels, 5, 0)
    for f in range(5):
        codes = labels.loc[split.studies(f)].to_numpy()
        assert (codes == 2).any()


def test_roundtrip_and_tamper_detection(labels, tmp_path):
    split = make_split(labels, 4, 0, data_digest="abc")
    path = save_split(split, tmp_path / "split.json")
    loaded = load_split(path)
    assert loaded.assignment == split.assignment and loaded.digest == split.digest
    doc = json.loads(path.read_text())
    first = next(iter(doc["assignment"]))
    doc["assignment"][first] = (doc["assignment"][first] + 1) % 4
    path.write_text(json.dumps(doc))
    with pytest.raises(SplitError, match="digest mismatch"):
        load_split(path)


def test_leakage_check_catches_a_study_in_two_folds(labels, tmp_path):
    path = save_split(make_split(labels, 4, 0), tmp_path / "split.json")
    text = path.read_text()
    # duplicate the first assignment with another fold: JSON parsers would silently keep the last
    first_line = next(line for line in text.splitlines() if line.strip().startswith('"1'))
    study, fold = first_line.strip().rstrip(",").split(":")
    dup = f"  {study}: {(int(fold) + 1) % 4},\n"
    path.write_text(text.replace('"assignment": {\n', '"assignment": {\n' + dup, 1))
    with pytest.raises(SplitError, match="leakage"):
        load_split(path)


def test_split_must_cover_the_data(labels):
    split = make_split(labels.iloc[:40], 4, 0)
    with pytest.raises(SplitError, match="not in the split"):
        check_covers(split, list(labels.index))


def test_bad_fold_and_too_few_studies(labels):
    split = make_split(labels, 5, 0)
    with pytest.raises(SplitError, match="fold 7"):
        split.studies(7)
    with pytest.raises(SplitError):
        make_split(labels.iloc[:3], 5, 0)


def test_subset_is_deterministic_and_bounded():
    studies = list(range(100))
    a = subset_studies(studies, 10)
    assert a == subset_studies(list(reversed(studies)), 10)
    assert len(a) == 10 and a == sorted(a)
    assert subset_studies(studies, None) == studies
