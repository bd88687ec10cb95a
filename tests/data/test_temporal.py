"""Temporal protocols: each user's last interactions held out, and one global time cut."""
import numpy as np
import pytest

from disentangle.data import LoadOptions, load_dataset
from disentangle.data.sources import DataError
from disentangle.data.temporal import global_time_split, last_per_user_split

ALL = LoadOptions(min_user_interactions=1)


def rows_of(eval_set, data, part="target"):
    m = getattr(eval_set, part)
    return {(data.user_ids[eval_set.users[r]], data.item_ids[c])
            for r in range(len(eval_set)) for c in m.indices[m.indptr[r]:m.indptr[r + 1]]}


def train_pairs(split):
    d = split.train
    return {(d.user_ids[u], d.item_ids[i]) for u, i in zip(d.users, d.items)}


@pytest.fixture
def timed(tmp_path):
    # user a: items by time i1(1) i3(2) i2(3) i4(4) i0(5); user b: j0(10) j1(0) (out of order)
    text = ("user,item,timestamp\na,i0,5\na,i1,1\na,i2,3\na,i3,2\na,i4,4\n"
            "b,j0,10\nb,j1,0\n")
    (tmp_path / "t.csv").write_text(text)
    return load_dataset(f"csv:{tmp_path / 't.csv'}", options=ALL)


def test_times_follow_their_interactions_through_loading(timed):
    d = timed.data
    got = {(d.user_ids[u], d.item_ids[i]): t for u, i, t in zip(d.users, d.items,
                                                                timed.timestamps)}
    assert got == {("a", "i0"): 5, ("a", "i1"): 1, ("a", "i2"): 3, ("a", "i3"): 2,
                   ("a", "i4"): 4, ("b", "j0"): 10, ("b", "j1"): 0}


def test_a_repeated_pair_takes_its_latest_time_and_filters_keep_times_aligned(tmp_path):
    (tmp_path / "t.csv").write_text("user,item,rating,timestamp\nx,1,5,7\nx,1,5,9\nx,2,5,8\n"
                                    "y,1,1,3\ny,3,5,4\nz,1,5,1\n")
    src = load_dataset(f"csv:{tmp_path / 't.csv'}", options=LoadOptions(4, 2))
    d = src.data
    got = {(d.user_ids[u], d.item_ids[i]): t for u, i, t in zip(d.users, d.items,
                                                                src.timestamps)}
    assert got == {("x", "1"): 9, ("x", "2"): 8}  # y has 1 rating >= 4, z 1 interaction


def test_each_users_last_interactions_are_held_out_by_time(timed):
    split = last_per_user_split(timed, valid_ratio=0.2, test_ratio=0.2)
    d = split.train
    # a: n=5, train floor(0.6*5)=3 earliest, validation the 4th, test the 5th;
    # b: n=2, train floor(0.6*2)=1 (j1, time 0), validation none (floor(0.8*2)=1), test j0
    assert train_pairs(split) == {("a", "i1"), ("a", "i3"), ("a", "i2"), ("b", "j1")}
    assert rows_of(split.valid, d) == {("a", "i4")}
    assert rows_of(split.test, d) == {("a", "i0"), ("b", "j0")}
    assert rows_of(split.test, d, "history") == {("a", "i1"), ("a", "i3"), ("a", "i2"),
                                                 ("a", "i4"), ("b", "j1")}


def test_the_global_cut_holds_out_the_latest_interactions_of_everybody(timed):
    split = global_time_split(timed, valid_ratio=2 / 7, test_ratio=1 / 7)
    d = split.train
    # times 0 1 2 3 4 5 10: train the first int(4/7*7)=4, validation the next 2, test the last
    assert train_pairs(split) == {("b", "j1"), ("a", "i1"), ("a", "i3"), ("a", "i2")}
    assert rows_of(split.valid, d) == {("a", "i4"), ("a", "i0")}
    assert rows_of(split.test, d) == {("b", "j0")}


def test_ties_in_time_are_broken_by_index_not_at_random(tmp_path):
    (tmp_path / "t.csv").write_text("user,item,timestamp\n" +
                                    "".join(f"u,i{k},7\n" for k in range(10)))
    src = load_dataset(f"csv:{tmp_path / 't.csv'}", options=ALL)
    split = last_per_user_split(src)
    assert rows_of(split.test, split.train) == {("u", "i9")}
    assert train_pairs(split) == {("u", f"i{k}") for k in range(8)}


def test_without_times_a_temporal_protocol_is_an_error(tmp_path):
    (tmp_path / "t.csv").write_text("user,item\nu,a\nu,b\n")
    src = load_dataset(f"csv:{tmp_path / 't.csv'}", options=ALL)
    with pytest.raises(DataError, match="needs the time of each interaction"):
        last_per_user_split(src)
    with pytest.raises(ValueError, match="valid \\+ test < 1"):
        global_time_split(load_dataset("csv:" + str(tmp_path / "t.csv"), options=ALL), 0.5, 0.5)


def test_on_ml_100k_no_user_is_tested_on_the_past_and_the_cut_leaks_nothing(tmp_path, shared):
    rows = shared("ml-100k", "u.data").read_text()
    (tmp_path / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\t"
                                       "timestamp:float\n" + rows)
    src = load_dataset(f"recbole:{tmp_path / 'ml'}")
    d, t = src.data, src.timestamps
    when = {(u, i): x for u, i, x in zip(d.users, d.items, t)}
    split = last_per_user_split(src)
    latest_train = np.full(d.num_users, -np.inf)
    np.maximum.at(latest_train, split.train.users,
                  [when[p] for p in zip(split.train.users, split.train.items)])
    test = split.test
    for r, u in enumerate(test.users):
        for i in test.target.indices[test.target.indptr[r]:test.target.indptr[r + 1]]:
            assert when[(u, i)] >= latest_train[u]
    assert split.train.num_interactions + test.target.nnz + split.valid.target.nnz == \
        d.num_interactions
    cut = global_time_split(src)
    train_t = [when[p] for p in zip(cut.train.users, cut.train.items)]
    test_t = [when[(u, i)] for r, u in enumerate(cut.test.users) for i in
              cut.test.target.indices[cut.test.target.indptr[r]:cut.test.target.indptr[r + 1]]]
    assert max(train_t) <= min(test_t)
    assert abs(len(test_t) / d.num_interactions - 0.1) < 1e-3
