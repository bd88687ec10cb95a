"""A user's own interaction file (``--dataset csv:PATH``): what is read, and what is refused."""
import gzip
import logging

import pytest

from disentangle.data import LoadOptions, load_dataset
from disentangle.data.sources import DataError, load_csv

ALL = LoadOptions(min_user_interactions=1)


def pairs(source) -> set[tuple[str, str]]:
    d = source.data
    return {(d.user_ids[u], d.item_ids[i]) for u, i in zip(d.users, d.items)}


def write(tmp_path, text, name="x.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


ROWS = [("alice", "The Matrix"), ("alice", "Heat"), ("bob", "Heat"), ("carol", "Up")]


@pytest.mark.parametrize("delimiter", ["\t", ",", ";", "|", " "])
def test_each_delimiter_is_detected(tmp_path, delimiter):
    rows = [(u, i.replace(" ", "_")) for u, i in ROWS]
    path = write(tmp_path, "".join(f"{u}{delimiter}{i}\n" for u, i in rows))
    assert pairs(load_csv(path, ALL)) == set(rows)


def test_ids_are_any_strings_and_quoted_fields_may_hold_the_delimiter(tmp_path):
    path = write(tmp_path, 'user,item\n"smith, j",  "Heat, 1995"\n42,été\n')
    assert pairs(load_csv(path, ALL)) == {("smith, j", "Heat, 1995"), ("42", "été")}


def test_a_header_with_known_names_maps_columns_in_any_order(tmp_path):
    path = write(tmp_path, "timestamp;rating;movieId;userId\n100;5;m1;u1\n200;2;m2;u1\n"
                           "300;4.5;m3;u2\n")
    assert pairs(load_csv(path, ALL)) == {("u1", "m1"), ("u2", "m3")}


def test_a_first_row_with_a_text_rating_is_a_header_even_with_unknown_names(tmp_path):
    path = write(tmp_path, "who,what,stars\nu1,i1,5\nu2,i2,1\n")
    assert pairs(load_csv(path, ALL)) == {("u1", "i1")}


def test_without_a_header_the_first_row_is_data(tmp_path):
    path = write(tmp_path, "u1,i1,5,100\nu2,i2,4,200\n")
    assert pairs(load_csv(path, ALL)) == {("u1", "i1"), ("u2", "i2")}


def test_rating_threshold_applies_only_when_there_is_a_rating_column(tmp_path):
    rated = write(tmp_path, "u1,i1,3\nu1,i2,4\nu2,i1,5\n", "rated.csv")
    assert pairs(load_csv(rated, LoadOptions(3.5, 1))) == {("u1", "i2"), ("u2", "i1")}
    assert len(pairs(load_csv(rated, LoadOptions(3.0, 1)))) == 3
    implicit = write(tmp_path, "u1,i1\nu1,i2\n", "implicit.csv")
    assert len(pairs(load_csv(implicit, LoadOptions(100.0, 1)))) == 2


def test_min_user_interactions_drops_sparse_users_and_their_orphan_items(tmp_path):
    path = write(tmp_path, "a,1\na,2\na,3\nb,4\n")
    data = load_csv(path, LoadOptions(min_user_interactions=2)).data
    assert list(data.user_ids) == ["a"] and sorted(data.item_ids) == ["1", "2", "3"]


def test_duplicates_are_merged_and_counted_in_a_warning(tmp_path, caplog):
    path = write(tmp_path, "u1,i1\nu1,i1\nu1,i2\nu1,i1\n")
    with caplog.at_level(logging.WARNING, logger="disentangle"):
        source = load_csv(path, ALL)
    assert source.data.num_interactions == 2
    assert "2 repeated (user, item) rows merged" in caplog.text


def test_gzip_crlf_blank_lines_and_a_byte_order_mark_are_read(tmp_path):
    text = "\ufeffuser,item\r\n\r\nu1,i1\r\n  \r\nu2,i2\r\n"
    path = write(tmp_path, gzip.compress(text.encode()), "x.csv.gz")
    assert pairs(load_csv(path, ALL)) == {("u1", "i1"), ("u2", "i2")}
    utf16 = write(tmp_path, "user\titem\nu1\ti1\n".encode("utf-16"), "x16.tsv")
    assert pairs(load_csv(utf16, ALL)) == {("u1", "i1")}


def test_explicit_delimiter_overrides_detection(tmp_path):
    path = write(tmp_path, "a,b;c\nd,e;f\n")
    assert pairs(load_csv(path, LoadOptions(min_user_interactions=1, delimiter=";"))) == {
        ("a,b", "c"), ("d,e", "f")}
    assert pairs(load_csv(path, LoadOptions(min_user_interactions=1, delimiter="comma"))) == {
        ("a", "b;c"), ("d", "e;f")}


def test_load_dataset_reaches_csv_files_by_name(tmp_path):
    path = write(tmp_path, "u1,i1\nu2,i2\n")
    assert pairs(load_dataset(f"csv:{path}", options=ALL)) == {("u1", "i1"), ("u2", "i2")}


@pytest.mark.parametrize("content, message", [
    ("", "empty file"),
    ("\n \n", "empty file"),
    (b"u,i\n\x00\x01", "line 2: binary data"),
    (b"u,i\nv,\xe9\n", "line 2: not UTF-8 text (byte 0xe9)"),
    ("a\nb\n", "one column with each of tab, comma"),
    ("a,b,c,d,e\n", "line 1: 5 fields"),
    ("u,i\nu,j\nu,k,3,4\n", "line 3: 4 fields, expected 2 as on line 1"),
    ("u,i,5\nu,j,five\n", "line 2: rating 'five' is not a number"),
    ("u,i,5\nu,j,NaN\n", "line 2: rating 'NaN' is not a finite number"),
    ("u,i,5\nu,j,-inf\n", "line 2: rating '-inf' is not a finite number"),
    ("u,i,5,1\nu,j,5,2020-01-01\n", "line 2: timestamp '2020-01-01' is not a number"),
    ("u,i\n ,j\n", "line 2: empty user id"),
    ("u,i\nu,\n", "line 2: empty item id"),
    ('u,i\nu,"j\nv,k\n', "line 2: item id spans lines"),
    ("user,item,rating\n", "only a header line"),
    ("u,i,1\nv,j,2\n", "none of the 2 ratings is >= 4"),
])
def test_bad_files_are_refused_naming_file_and_line(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError) as err:
        load_csv(path, ALL)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_missing_file_folder_and_bad_gzip_are_refused(tmp_path):
    for path, message in ((tmp_path / "nope.csv", "no such file"), (tmp_path, "is a folder"),
                          (write(tmp_path, "u,i\n", "x.gz"), "not a valid gzip file")):
        with pytest.raises(DataError, match=message):
            load_csv(path)


def test_nothing_left_after_filtering_is_an_error_naming_the_filter(tmp_path):
    path = write(tmp_path, "u1,i1\nu2,i2\n")
    with pytest.raises(DataError, match="no user has 5 or more interactions"):
        load_csv(path, LoadOptions(min_user_interactions=5))


@pytest.mark.parametrize("value", ["ab", "", "x", "\n", '"'])
def test_a_bad_delimiter_option_is_refused(tmp_path, value):
    with pytest.raises(DataError, match="delimiter"):
        load_csv(write(tmp_path, "u,i\n"), LoadOptions(delimiter=value))
