"""A ready split folder (``--split-dir``, Liang et al.'s ``pro_sg`` format): titles only from
the dataset it was made from, leaking splits refused, every corrupt file named with its line."""
import logging
import shutil

import pytest

from disentangle.data import InteractionData, load_dataset, load_split_dir
from disentangle.data.sources import DataError

# a tiny catalogue: users a..f, items 10..14 with titles and one category each
CAT_USERS = ["a", "a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "f", "f"]
CAT_ITEMS = ["10", "11", "12", "10", "13", "11", "14", "12", "13", "10", "14", "11", "12"]
META = {i: (f"Film {i}", ["Drama" if int(i) % 2 else "Comedy"]) for i in set(CAT_ITEMS)}


def catalog() -> InteractionData:
    return InteractionData.from_raw(CAT_USERS, CAT_ITEMS, item_meta=META)


# the split made from it: a, b, c train; d validates; e, f test
SPLIT = {
    "unique_sid.txt": "10\n11\n12\n13\n14\n",
    "unique_uid.txt": "a\nb\nc\nd\ne\nf\n",
    "train.csv": "uid,sid\n0,0\n0,1\n0,2\n1,0\n1,3\n2,1\n2,4\n",
    "validation_tr.csv": "uid,sid\n3,2\n",
    "validation_te.csv": "uid,sid\n3,3\n",
    "test_tr.csv": "uid,sid\n4,0\n5,1\n",
    "test_te.csv": "uid,sid\n4,4\n5,2\n",
}


def make(tmp_path, **changes):
    """The split folder with some files replaced (``None`` deletes one)."""
    root = tmp_path / "pro_sg"
    root.mkdir()
    for name, text in {**SPLIT, **{k.replace("__", "."): v for k, v in changes.items()}}.items():
        if text is not None:
            (root / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


# -- titles and categories -----------------------------------------------------------------
def test_a_matching_catalogue_gives_titles_and_categories(tmp_path):
    split = load_split_dir(make(tmp_path), catalog(), "tiny")
    assert list(split.train.item_titles) == [f"Film {i}" for i in (10, 11, 12, 13, 14)]
    assert split.train.category_names == ["Comedy", "Drama"]
    assert split.train.item_categories.tolist() == [[1, 0], [0, 1], [1, 0], [0, 1], [1, 0]]
    assert split.item_metadata.startswith("titles and categories of tiny")


def test_a_matching_catalogue_without_titles_says_it_has_none(tmp_path):
    bare = InteractionData.from_raw(CAT_USERS, CAT_ITEMS)
    split = load_split_dir(make(tmp_path), bare, "tiny")
    assert split.train.item_titles is None and split.train.item_categories is None
    assert split.item_metadata == ("no titles or categories: tiny has none; the split's items "
                                   "and interactions are tiny's")


def test_without_unique_uid_the_item_counts_decide(tmp_path):
    split = load_split_dir(make(tmp_path, unique_uid__txt=None), catalog(), "tiny")
    assert split.train.item_titles is not None


@pytest.mark.parametrize("changes, reason", [
    # an item the catalogue does not have
    ({"unique_sid__txt": "10\n11\n12\n13\n99\n"}, "1 of its 5 items are not in it, e.g. item '99'"),
    # same item ids, other interactions: user a never saw item 13 in the catalogue
    ({"train__csv": "uid,sid\n0,0\n0,3\n0,2\n1,0\n1,3\n2,1\n2,4\n"},
     "1 of its 13 interactions are not in it, e.g. user 'a' with item '13'"),
    # other users: the raw user ids are not the catalogue's
    ({"unique_uid__txt": "u1\nu2\nu3\nu4\nu5\nu6\n"}, "13 of its 13 interactions are not in it"),
    # without user ids: item 10 seen 4 times in the split, 3 times in the catalogue
    ({"unique_uid__txt": None, "train__csv": "uid,sid\n0,0\n0,1\n0,2\n1,0\n1,3\n2,0\n2,4\n"},
     "1 items have more interactions in the split than in it, e.g. item '10': 4 against 3"),
])
def test_a_split_not_made_from_the_catalogue_gets_no_titles_and_says_so(tmp_path, caplog,
                                                                        changes, reason):
    with caplog.at_level(logging.WARNING, logger="disentangle"):
        split = load_split_dir(make(tmp_path, **changes), catalog(), "tiny")
    data = split.train
    assert data.item_titles is None and data.item_categories is None
    assert data.category_names == []
    assert "no titles or categories: the split was not made from tiny" in split.item_metadata
    assert reason in split.item_metadata
    assert split.item_metadata in caplog.text


def test_without_a_catalogue_the_split_says_it_has_no_titles(tmp_path, caplog):
    root = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="disentangle"):
        split = load_split_dir(root)
    assert split.train.item_titles is None and not caplog.text
    assert split.item_metadata == (f"{root}: no titles or categories: no dataset given to take "
                                   f"them from; items are shown by their raw ids")
    with caplog.at_level(logging.WARNING, logger="disentangle"):
        split = load_split_dir(root, None, "ml-1m")  # named, but its files were not found
    assert "no titles or categories: dataset ml-1m was not loaded" in caplog.text


@pytest.mark.parametrize("split_name, catalog_name, matches", [
    ("ml-100k", "ml-100k", True),
    ("ml-100k", "ml-latest-small", False),  # the README's example before: item 474 mislabelled
    ("ml-latest-small", "ml-latest-small", True),
    ("ml-latest-small", "ml-100k", False),
])
def test_shared_splits_match_only_their_own_dataset(shared, split_name, catalog_name, matches):
    path = shared("heldout", split_name, "pro_sg")
    data_dir = None if catalog_name == "ml-latest-small" else shared(catalog_name)
    cat = load_dataset(catalog_name, data_dir).data
    split = load_split_dir(path, cat, catalog_name)
    assert (split.train.item_titles is not None) == matches, split.item_metadata
    if matches:
        index = {raw: k for k, raw in enumerate(cat.item_ids)}
        rows = [index[raw] for raw in split.train.item_ids]
        assert list(split.train.item_titles) == list(cat.item_titles[rows])
    if split_name == "ml-100k" and matches:
        k = list(split.train.item_ids).index("474")
        assert split.train.item_titles[k].startswith("Dr. Strangelove")


def test_ml_1m_split_gets_no_titles_from_the_default_dataset(shared):
    # before: 2,211 of its 3,690 items showed another film's title
    path = shared("heldout", "ml-1m", "pro_sg")
    split = load_split_dir(path, load_dataset("ml-latest-small").data, "ml-latest-small")
    assert split.train.item_titles is None and split.train.num_items == 3690
    assert "(1479 of its 3690 items are not in it" in split.item_metadata


# -- leakage ---------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, file, line, message", [
    ({"train__csv": SPLIT["train.csv"] + "4,3\n"}, "train.csv", 9,
     "uid 4 is a test user (test_tr.csv/test_te.csv); train.csv holds 1 rows of 1 test user"),
    ({"train__csv": SPLIT["train.csv"] + "3,0\n3,1\n"}, "train.csv", 9,
     "uid 3 is a validation user"),
    ({"test_te__csv": "uid,sid\n4,4\n5,1\n"}, "test_te.csv", 3,
     "uid 5, sid 1 is also in test_tr.csv: a held-out target must not be in the user's "
     "fold-in history"),
    ({"validation_te__csv": "uid,sid\n3,2\n"}, "validation_te.csv", 2, "uid 3, sid 2"),
])
def test_a_leaking_split_is_refused(tmp_path, changes, file, line, message):
    root = make(tmp_path, **changes)
    with pytest.raises(DataError) as err:
        load_split_dir(root, catalog())
    assert str(err.value).startswith(f"{root / file}: line {line}: {message}")


def test_a_user_both_validating_and_testing_is_refused(tmp_path):
    root = make(tmp_path, test_tr__csv="uid,sid\n4,0\n3,1\n", test_te__csv="uid,sid\n4,4\n")
    with pytest.raises(DataError, match=f"^{root}: uid 3 is both a validation and a test user"):
        load_split_dir(root)


# -- corrupt files ---------------------------------------------------------------------------
@pytest.mark.parametrize("changes, file, message", [
    ({"train__csv": "uid,sid\n0,0\n0,x\n"}, "train.csv", "line 3: '0,x'; expected two "
                                                         "non-negative integers 'uid,sid'"),
    ({"train__csv": "uid,sid\n0,0\n0\n"}, "train.csv", "line 3: '0'; expected two"),
    ({"train__csv": "uid,sid\n0,0\n0,1,2\n"}, "train.csv", "line 3: '0,1,2'"),
    ({"train__csv": "uid,sid\n0,0\n\n-1,2\n"}, "train.csv", "line 4: '-1,2'"),
    ({"test_tr__csv": "uid,sid\r\n4,0\r\n5,1.5\r\n"}, "test_tr.csv", "line 3: '5,1.5'"),
    ({"train__csv": "user,item\n0,0\n"}, "train.csv", "line 1: 'user,item'; expected the "
                                                      "header 'uid,sid'"),
    ({"train__csv": ""}, "train.csv", "empty file; expected a 'uid,sid' header"),
    ({"train__csv": "uid,sid\n0,0\n0,7\n"}, "train.csv", "line 3: sid 7 is past the 5 items "
                                                         "of unique_sid.txt"),
    ({"test_te__csv": "uid,sid\n4,4\n9,2\n"}, "test_te.csv", "line 3: uid 9 is past the 6 "
                                                             "users of unique_uid.txt"),
    ({"train__csv": b"uid,sid\n0,0\n\x00\x00"}, "train.csv", "line 3: binary data"),
    ({"train__csv": b"uid,sid\n0,\xff\n"}, "train.csv", "line 2: not UTF-8 text (byte 0xff)"),
    ({"train__csv": None}, "train.csv", "no such file"),
    ({"unique_sid__txt": "10\n11\n10\n13\n14\n"}, "unique_sid.txt",
     "line 3: item id '10' repeats line 1"),
    ({"unique_sid__txt": "10\n\n12\n13\n14\n"}, "unique_sid.txt", "line 2: empty item id"),
    ({"unique_uid__txt": "a\nb\nc\nd\ne\na\n"}, "unique_uid.txt",
     "line 6: user id 'a' repeats line 1"),
    ({"unique_sid__txt": None}, "unique_sid.txt", "no such file"),
    ({"train__csv": "uid,sid\n0,0\n1234567890123456789,1\n"}, "train.csv",
     "line 3: '1234567890123456789,1'; expected two non-negative integers 'uid,sid' (of at "
     "most 18 digits)"),
    # without unique_uid.txt a huge uid would mean as many users
    ({"unique_uid__txt": None, "test_te__csv": "uid,sid\n4,4\n999999999999,2\n"},
     "test_te.csv", "line 3: uid 999999999999 is past the 7 users of the split; without "
                    "unique_uid.txt the uids must number the users 0 to 6"),
])
def test_a_corrupt_split_file_is_named_with_its_line(tmp_path, changes, file, message):
    root = make(tmp_path, **changes)
    with pytest.raises(DataError) as err:
        load_split_dir(root)
    assert str(err.value).startswith(f"{root / file}: {message}"), str(err.value)


@pytest.mark.parametrize("changes, message", [
    ({"test_tr__csv": "uid,sid\n", "test_te__csv": "uid,sid\n"}, "test_tr.csv and test_te.csv "
                                                                 "have no rows"),
])
def test_a_split_without_test_users_is_refused(tmp_path, changes, message):
    root = make(tmp_path, **changes)
    with pytest.raises(DataError, match=f"^{root}: {message}"):
        load_split_dir(root)


def test_a_missing_or_non_folder_split_dir_is_refused(tmp_path):
    for path, what in ((tmp_path / "nope", "no such folder"),
                       (make(tmp_path) / "train.csv", "not a folder")):
        with pytest.raises(DataError, match=f"^{path}: {what}"):
            load_split_dir(path)


def test_blank_lines_and_crlf_are_read_with_the_right_line_numbers(tmp_path):
    root = make(tmp_path, train__csv="uid,sid\r\n0,0\r\n\r\n 0 , 1\r\n0,2\r\n1,0\r\n1,3\r\n2,1\r\n"
                                     "2,4\r\n9,9\r\n")
    with pytest.raises(DataError, match=r"train.csv: line 10: sid 9 is past"):
        load_split_dir(root)
    shutil.rmtree(root)
    root = make(tmp_path, train__csv="uid,sid\r\n0,0\r\n\r\n 0 , 1\r\n0,2\r\n1,0\r\n1,3\r\n2,1\r\n"
                                     "2,4\r\n")
    assert load_split_dir(root).train.num_interactions == 7
