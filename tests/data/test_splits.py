"""Split protocols: no leakage, disjoint parts, reproducible, and Liang's counts on real data."""
import numpy as np
import pytest

from disentangle.data import InteractionData, Source, load_dataset, load_split_dir, make_split
from disentangle.data.splits import given_split, heldout_split, ratio_split


def random_data(seed=0, users=60, items=40, per_user=12):
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(users), per_user)
    i = np.concatenate([rng.choice(items, per_user, replace=False) for _ in range(users)])
    return InteractionData(u, i, np.arange(users), np.arange(items))


def pairs(m, users):
    coo = m.tocoo()
    return {(int(users[r]), int(c)) for r, c in zip(coo.row, coo.col)}


def test_heldout_users_are_disjoint_and_never_trained_on():
    split = heldout_split(random_data(), seed=1, heldout_users=10)
    train_users = set(split.train.users.tolist())
    valid, test = set(split.valid.users.tolist()), set(split.test.users.tolist())
    assert len(valid) == len(test) == 10
    assert not (valid & test) and not (valid & train_users) and not (test & train_users)


def test_heldout_fold_in_and_target_are_disjoint_and_20_percent():
    split = heldout_split(random_data(), seed=1, heldout_users=10)
    for es in (split.valid, split.test):
        assert not pairs(es.history, es.users) & pairs(es.target, es.users)
        assert (np.diff(es.target.indptr) == int(0.2 * 12)).all()
        assert (np.diff(es.history.indptr) == 12 - int(0.2 * 12)).all()


def test_heldout_drops_items_seen_only_by_heldout_users():
    data = random_data()
    # item 40 is new and seen only by user 59
    data = InteractionData(np.append(data.users, 59), np.append(data.items, 40),
                           data.user_ids, np.arange(41))
    split = heldout_split(data, seed=3, heldout_users=10)
    seen = np.zeros(split.train.num_items, bool)
    seen[split.train.items] = True
    assert seen.all()
    held_items = np.concatenate([split.test.history.indices, split.test.target.indices])
    assert held_items.max() < split.train.num_items


def test_splits_are_reproducible_and_seed_dependent():
    data = random_data()
    a, b, c = (ratio_split(data, seed=s) for s in (5, 5, 6))
    assert np.array_equal(a.train.items, b.train.items)
    assert not np.array_equal(a.train.items, c.train.items)
    h1, h2 = heldout_split(data, 7, 10), heldout_split(data, 7, 10)
    assert np.array_equal(h1.test.users, h2.test.users)
    assert (h1.test.target != h2.test.target).nnz == 0


def test_ratio_parts_partition_each_users_items():
    data = random_data(per_user=10)
    split = ratio_split(data, seed=0)
    train = set(zip(split.train.users.tolist(), split.train.items.tolist()))
    valid = pairs(split.valid.target, split.valid.users)
    test = pairs(split.test.target, split.test.users)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert train | valid | test == set(zip(data.users.tolist(), data.items.tolist()))
    assert len(valid) == len(test) == 60 and len(train) == 480
    # test history = train + validation, so both are masked when ranking test items
    assert pairs(split.test.history, split.test.users) == train | valid


def test_given_split_keeps_the_test_file_and_carves_validation_from_train():
    data = random_data(per_user=10)
    test_mask = np.zeros(data.num_interactions, bool)
    test_mask[::5] = True
    split = given_split(Source(data, test_mask), seed=0, valid_ratio=0.25)
    test = pairs(split.test.target, split.test.users)
    assert test == set(zip(data.users[test_mask].tolist(), data.items[test_mask].tolist()))
    valid = pairs(split.valid.target, split.valid.users)
    assert len(valid) == 60 * 2  # int(0.25 * 8) per user
    assert not valid & test
    assert split.has_validation


def test_given_split_without_validation_trains_on_every_training_interaction():
    data = random_data(per_user=10)
    test_mask = np.zeros(data.num_interactions, bool)
    test_mask[::5] = True
    split = given_split(Source(data, test_mask), seed=0, valid_ratio=0.0)
    assert len(split.valid) == 0 and split.valid.target.nnz == 0 and not split.has_validation
    assert split.train.num_interactions == int((~test_mask).sum())


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown protocol 'temporal-x'"):
        make_split(Source(random_data()), "temporal-x", 0)


def test_embedded_dataset_matches_liang_counts():
    data = load_dataset("ml-latest-small").data
    # shared/data/heldout/README.md: 48562 interactions, 603 users, 6298 items after >=4, >=5
    assert (data.num_interactions, data.num_users, data.num_items) == (48562, 603, 6298)
    assert len(data.category_names) == 19 and data.item_titles[0] == "Toy Story (1995)"


def test_ml_100k_loader_matches_liang_counts(shared):
    data = load_dataset("ml-100k", shared("ml-100k")).data
    assert (data.num_interactions, data.num_users, data.num_items) == (55361, 938, 1447)


def test_split_dir_reads_liang_files_with_catalog_metadata(shared):
    path = shared("heldout", "ml-100k", "pro_sg")
    catalog = load_dataset("ml-100k", shared("ml-100k")).data
    split = load_split_dir(path, catalog)
    assert split.train.num_interactions == 43606 and split.train.num_items == 1415
    assert len(split.valid) == len(split.test) == 100
    assert split.test.target.nnz == 1105 and split.test.history.nnz == 4612
    raw = split.train.item_ids[0]
    assert split.train.item_titles[0] == catalog.item_titles[list(catalog.item_ids).index(raw)]


def test_split_dir_counts_a_user_without_targets(shared):
    split = load_split_dir(shared("heldout", "ml-latest-small", "pro_sg"))
    assert split.test.num_without_target == 1 and len(split.test) == 60
