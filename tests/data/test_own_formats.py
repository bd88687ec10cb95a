"""A user's own data beyond one CSV: RecBole atomic files, a LightGCN-format folder, an item
catalogue (``--items``), ML-1M's original ratings.dat, and the config keys that name them."""
import logging

import numpy as np
import pytest

from disentangle.config import ConfigError, resolve
from disentangle.data import LoadOptions, load_dataset
from disentangle.data.delimited import read_items
from disentangle.data.sources import DataError

ALL = LoadOptions(min_user_interactions=1)

INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t5\t878887116\n"
         "22\t377\t4\t878887116\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery\n"
        "377\tHeavyweights\t1994\tChildren's Comedy\n")


def pairs(data) -> set[tuple[str, str]]:
    return {(data.user_ids[u], data.item_ids[i]) for u, i in zip(data.users, data.items)}


def by_item(data) -> dict[str, tuple[str, set[str]]]:
    return {data.item_ids[j]: (data.item_titles[j], {data.category_names[c] for c in
                                                     np.flatnonzero(data.item_categories[j])})
            for j in range(data.num_items)}


@pytest.mark.parametrize("layout", ["folder", "flat"])
def test_recbole_atomic_files_load_with_their_typed_header_and_item_file(tmp_path, layout):
    folder = tmp_path / "ml" if layout == "folder" else tmp_path
    folder.mkdir(exist_ok=True)
    (folder / "ml.inter").write_text(INTER)
    (folder / "ml.item").write_text(ITEM)
    data = load_dataset(f"recbole:{tmp_path / 'ml'}", options=LoadOptions(3.5, 1)).data
    assert pairs(data) == {("196", "377"), ("22", "377")}  # rating >= 3.5
    assert by_item(data) == {"377": ("Heavyweights", {"Children's", "Comedy"})}
    everything = load_dataset(f"recbole:{tmp_path / 'ml'}", options=LoadOptions(0, 1)).data
    assert by_item(everything)["302"] == ("L.A. Confidential", {"Crime", "Film-Noir", "Mystery"})


def test_recbole_without_an_inter_file_names_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=r"no ml.inter in .*expected RecBole atomic files"):
        load_dataset(f"recbole:{tmp_path / 'ml'}")


def test_the_shared_ml_100k_as_recbole_equals_the_named_loader(tmp_path, shared):
    """u.data rewritten as a RecBole .inter file loads to the same interactions."""
    rows = shared("ml-100k", "u.data").read_text().splitlines()
    (tmp_path / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "\n".join(rows))
    named = load_dataset("ml-100k", shared("ml-100k")).data
    own = load_dataset(f"recbole:{tmp_path / 'ml-100k'}").data
    assert pairs(own) == pairs(named) and own.num_interactions == named.num_interactions


def test_a_lightgcn_folder_keeps_its_split(tmp_path):
    (tmp_path / "train.txt").write_text("0 0 1 2\n1 1 2\n")
    (tmp_path / "test.txt").write_text("0 3\n1 0\n")
    source = load_dataset(f"lightgcn:{tmp_path}")
    d = source.data
    test = {(d.user_ids[u], d.item_ids[i]) for u, i, t in zip(d.users, d.items, source.given_test)
            if t}
    assert test == {("0", "3"), ("1", "0")} and d.num_interactions == 7


@pytest.mark.parametrize("name", ["csv:", "recbole:", "lightgcn: "])
def test_a_prefix_without_a_path_is_refused(name):
    with pytest.raises(DataError, match="give a path after"):
        load_dataset(name)


def test_columns_for_a_fixed_format_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"data.columns='user=a' \(--columns\) applies to a "
                                        r"csv:PATH dataset only"):
        load_dataset(f"lightgcn:{tmp_path}", options=LoadOptions(columns="user=a"))


# -- item catalogues ------------------------------------------------------------------------
def test_items_give_titles_and_categories_to_a_csv_dataset(tmp_path, caplog):
    (tmp_path / "r.csv").write_text("customer,sku\nc1,A1\nc1,B2\nc2,A1\nc2,Z9\n")
    (tmp_path / "items.csv").write_text('id,title,categories\nA1,"Tea, green",Drinks|Hot\n'
                                        "B2,Mug,Kitchen\nC3,Unused,Drinks\n")
    opts = LoadOptions(min_user_interactions=1, items=str(tmp_path / "items.csv"))
    with caplog.at_level(logging.WARNING, logger="disentangle"):
        data = load_dataset(f"csv:{tmp_path / 'r.csv'}", options=opts).data
    assert by_item(data) == {"A1": ("Tea, green", {"Drinks", "Hot"}),
                             "B2": ("Mug", {"Kitchen"}), "Z9": ("Z9", set())}
    assert data.category_names == ["Drinks", "Hot", "Kitchen"]
    assert "1 of the dataset's 3 items are not listed" in caplog.text


def test_items_replace_a_named_datasets_metadata(tmp_path):
    (tmp_path / "items.tsv").write_text("1\tFirst film\tA|B\n2\tSecond\tB\n")
    data = load_dataset("ml-latest-small", options=LoadOptions(items=str(tmp_path / "items.tsv")))
    meta = by_item(data.data)
    assert meta["1"] == ("First film", {"A", "B"}) and data.data.category_names == ["A", "B"]


def test_movielens_movies_csv_is_an_item_catalogue(shared):
    meta = read_items(shared("ml-latest-small", "movies.csv"))
    assert meta["1"] == ("Toy Story (1995)",
                         ["Adventure", "Animation", "Children", "Comedy", "Fantasy"])
    assert len(meta) == 9742


@pytest.mark.parametrize("content, message", [
    ("id,title\n1,A\n1,B\n", "line 3: item '1' repeats line 2"),
    ("id,title,genres\n1,A\n", "line 2: 2 fields; expected item id, title and categories"),
    ("", "empty file"),
])
def test_a_bad_catalogue_is_refused_naming_the_line(tmp_path, content, message):
    path = tmp_path / "items.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_items(path)


def test_a_catalogue_of_other_items_is_an_error(tmp_path):
    (tmp_path / "items.csv").write_text("x1,A\nx2,B\n")
    with pytest.raises(DataError, match="none of the dataset's 6298 items is listed"):
        load_dataset("ml-latest-small", options=LoadOptions(items=str(tmp_path / "items.csv")))


# -- ML-1M's original ratings.dat -----------------------------------------------------------
def test_ml_1m_reads_the_original_ratings_dat_with_the_threshold(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n"
                                          "2::1193::4::978298413\n")
    (tmp_path / "movies.dat").write_text("1193::One Flew (1975)::Drama\n661::James (1996)::"
                                         "Animation|Children's\n")
    data = load_dataset("ml-1m", tmp_path, ALL).data
    assert pairs(data) == {("0", "1192"), ("1", "1192")}  # ids - 1, as the implicit copy
    assert by_item(data) == {"1192": ("One Flew (1975)", {"Drama"})}


def test_a_bad_ratings_dat_row_names_its_line(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1,661,3,978302109\n")
    (tmp_path / "movies.dat").write_text("1193::A (1975)::Drama\n")
    with pytest.raises(DataError, match=r"ratings.dat: line 2: '1,661,3,978302109'; expected "
                                        r"UserID::MovieID::Rating::Timestamp"):
        load_dataset("ml-1m", tmp_path, ALL)


# -- config ---------------------------------------------------------------------------------
def test_columns_and_items_are_config_keys_checked_up_front():
    cfg = resolve("macridvae", options={"data.columns": "user=a,item=b", "data.items": "i.csv"})
    assert cfg.data.columns == "user=a,item=b" and cfg.data.items == "i.csv"
    assert LoadOptions.from_config(cfg.data).columns == "user=a,item=b"
    with pytest.raises(ConfigError, match=r"^data.columns='user=a,who=b' is out of range: "):
        resolve("macridvae", options={"data.columns": "user=a,who=b"})
    with pytest.raises(ConfigError, match="data.items"):
        resolve("macridvae", options={"data.items": " "})
