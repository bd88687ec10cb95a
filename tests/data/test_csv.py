"""A user's own interaction file (``--dataset csv:PATH``): what is read, and what is refused."""
import gzip
import logging

import pytest

from disentangle.data import LoadOptions, load_dataset
from disentangle.data.delimited import load_csv
from disentangle.data.sources import DataError

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


# -- headers and the column mapping ---------------------------------------------------------
@pytest.mark.parametrize("content", [
    "who,what,stars\nu1,i1,5\nu2,i2,1\n",
    # the file of the issue: read by position, its timestamps would have been the users
    "ts,customer_ref,item_code,stars\n100,c1,i1,5\n200,c2,i2,4\n",
])
def test_a_header_without_user_and_item_names_is_an_error_listing_its_columns(tmp_path,
                                                                               content):
    path = write(tmp_path, content)
    header = content.split("\n")[0].split(",")
    with pytest.raises(DataError) as err:
        load_csv(path, ALL)
    message = str(err.value)
    assert message.startswith(f"{path}: line 1: a header whose columns (")
    assert all(repr(name) in message for name in header)
    assert "--columns user=NAME,item=NAME" in message


def test_the_column_mapping_reads_a_header_of_any_names_in_any_order(tmp_path):
    path = write(tmp_path, "ts,customer_ref,note,item_code,stars\n100,c1,x,i1,5\n"
                           "200,c2,y,i2,3\n300,c2,z,i3,4.5\n")
    columns = "user=customer_ref,item=item_code,rating=stars,timestamp=ts"
    got = load_csv(path, LoadOptions(min_user_interactions=1, columns=columns))
    assert pairs(got) == {("c1", "i1"), ("c2", "i3")}  # rating >= 4 from 'stars'


def test_a_partial_mapping_keeps_the_known_names_for_the_other_roles(tmp_path):
    path = write(tmp_path, "customer_ref;movieId;rating\nc1;m1;5\nc1;m2;1\n")
    got = load_csv(path, LoadOptions(min_user_interactions=1, columns="user=customer_ref"))
    assert pairs(got) == {("c1", "m1")}


def test_a_mapped_column_the_header_lacks_is_an_error_listing_the_header(tmp_path):
    path = write(tmp_path, "customer_ref,item_code\nc1,i1\n")
    with pytest.raises(DataError) as err:
        load_csv(path, LoadOptions(columns="user=customer,item=item_code"))
    assert str(err.value) == (f"{path}: line 1: no column 'customer' (--columns "
                              f"user=customer); the header has 'customer_ref', 'item_code'")


def test_a_mapping_for_a_file_without_header_is_an_error(tmp_path):
    path = write(tmp_path, "c1,i1,5\nc2,i2,4\n")
    with pytest.raises(DataError, match="line 1: no column 'customer_ref'"):
        load_csv(path, LoadOptions(columns="user=customer_ref,item=item_code"))


def test_two_columns_with_names_of_one_role_are_an_error(tmp_path):
    path = write(tmp_path, "user,uid,item\na,1,x\n")
    with pytest.raises(DataError, match="columns 'user' and 'uid' both look like the user"):
        load_csv(path, ALL)
    got = load_csv(path, LoadOptions(min_user_interactions=1, columns="user=uid"))
    assert pairs(got) == {("1", "x")}


def test_extra_named_columns_are_ignored_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, "userId,movieId,comment\nu1,m1,great\n")
    with caplog.at_level(logging.WARNING, logger="disentangle"):
        assert pairs(load_csv(path, ALL)) == {("u1", "m1")}
    assert "columns 'comment' are not used" in caplog.text


@pytest.mark.parametrize("text, message", [
    ("user", "expected role=column pairs"), ("who=x", "expected role=column pairs"),
    ("user=", "expected role=column pairs"), ("user=a,user=b", "role user given twice"),
    ("user=a,item=a", "one column named for two roles"),
])
def test_a_bad_column_mapping_is_refused(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_csv(write(tmp_path, "a,b\n"), LoadOptions(columns=text))


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
    ("1,2,3,4,5\n", "line 1: 5 fields with delimiter comma (detected; give --delimiter to "
                     "override) and no header"),
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


# -- decimal commas: an error about the rating or the delimiter -----------------------------
@pytest.mark.parametrize("content, message", [
    # semicolon-delimited (as where the comma is the decimal mark): the semicolon is detected
    ("1;10;4,5\n1;11;3,5\n", "line 1: rating '4,5' is not a number: a decimal comma? write 4.5"),
    ("user;item;rating\n1;10;4,5\n", "line 2: rating '4,5' is not a number: a decimal comma?"),
    ('u,i,r\n1,10,"4,5"\n', "line 2: rating '4,5' is not a number: a decimal comma? write 4.5"),
    # comma-delimited, unquoted: the rating splits in two
    ("1,10,4,5\n1,11,3,5\n2,10,4,0\n", "line 1: the 4th column (a timestamp by position) holds "
                                       "single digits only"),
    ("user,item,rating\n1,10,4,5\n", "line 2: 4 fields, expected 3 as on line 1 (a number with "
                                     "a decimal comma, such as 4,5? write 4.5)"),
    ("1,10,4,5\n1,11,4\n", "line 2: 3 fields, expected 4 as on line 1 (a number with a decimal "
                           "comma"),
    ("u,i,5\nu,j,4_5\n", "line 2: rating '4_5' is not a number"),
])
def test_decimal_comma_ratings_are_an_error_about_the_rating(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError) as err:
        load_csv(path)  # the default min_user_interactions=5 is never what is reported
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_a_wrong_delimiter_is_named_when_nothing_is_left(tmp_path):
    path = write(tmp_path, "".join(f"u{u};i{i},4\n" for u in range(3) for i in range(6)))
    with pytest.raises(DataError) as err:
        load_csv(path, LoadOptions(delimiter="comma"))
    assert str(err.value).startswith(f"{path}: no interactions left")
    assert "most user ids contain semicolon ('u0;i0'): is that the delimiter? give " \
           "--delimiter semicolon" in str(err.value)


def test_semicolon_is_preferred_when_commas_split_as_well(tmp_path):
    path = write(tmp_path, "a,b;c\nd,e;f\n")
    assert pairs(load_csv(path, ALL)) == {("a,b", "c"), ("d,e", "f")}


# -- named datasets: the delimiter, short rows and non-numeric ids ----------------------------
TINY = {
    "ml-100k": {"u.data": "1\t10\t5\t881250949\n1\t11\t4\t881250950\n2\t10\t3\t881250951\n",
                "u.item": "10|A (1995)|01-Jan-1995||http://x|0|1\n"
                          "11|B (1996)|01-Jan-1996||http://x|1|0\n",
                "u.genre": "unknown|0\nAction|1\n\n"},
    "ml-1m": {"implicit_train.txt": "0 1 2\n1 0\n", "implicit_test.txt": "0 0\n",
              "movies.dat": "1::A (1995)::Drama\n2::B (1996)::Comedy\n3::C (1997)::Drama\n"},
    "gowalla": {"train.txt": "0 0 1\n1 1\n", "test.txt": "0 2\n1 0\n"},
    "ml-latest-small": {"ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,9\n1,2,5.0,9\n",
                        "movies.csv": "movieId,title,genres\n1,A (1995),Drama\n"
                                      "2,\"B, The (1996)\",Comedy|Drama\n"},
}


def tiny(tmp_path, name, file=None, content=None):
    root = tmp_path / name
    root.mkdir()
    for f, text in TINY[name].items():
        (root / f).write_text(content if f == file else text)
    return root


@pytest.mark.parametrize("name, size", [("ml-100k", (1, 2, 2)), ("ml-1m", (2, 3, 4)),
                                        ("gowalla", (2, 3, 5)), ("ml-latest-small", (1, 2, 2))])
def test_tiny_copies_of_named_datasets_load(tmp_path, name, size):
    data = load_dataset(name, tiny(tmp_path, name), ALL).data
    assert (data.num_users, data.num_items, data.num_interactions) == size


@pytest.mark.parametrize("name, file, content, message", [
    ("ml-100k", "u.data", "1\t10\t5\t881250949\n1\t11\t4\n", "line 2: 3 fields, expected 4: "
                                                             "user item rating timestamp"),
    ("ml-100k", "u.data", "1\t10\t5\t881250949\nabc\t11\t4\t1\n", "line 2: user 'abc' is not a "
                                                                  "non-negative integer id"),
    ("ml-100k", "u.data", "1\t1.5\t5\t881250949\n", "line 1: item '1.5' is not a non-negative "
                                                    "integer id"),
    ("ml-100k", "u.data", "1\t10\tfive\t881250949\n", "line 1: rating 'five' is not a number"),
    ("ml-100k", "u.data", "1\t10\tnan\t881250949\n", "line 1: rating 'nan' is not a finite"),
    ("ml-100k", "u.item", "10|A (1995)|01-Jan-1995||http://x|0|1\n11|B\n",
     "line 2: 2 fields, expected 7"),
    ("ml-100k", "u.item", "x|A (1995)|01-Jan-1995||http://x|0|1\n", "line 1: item 'x'"),
    ("ml-100k", "u.genre", "unknown|0\nAction\n", "line 2: 1 field, expected 2: genre|index"),
    ("ml-1m", "implicit_train.txt", "0 1 2\n1\n", "line 2: user '1' and no item"),
    ("ml-1m", "implicit_test.txt", "0 x\n", "line 1: item 'x' is not a non-negative integer id"),
    ("ml-1m", "movies.dat", "1::A (1995)::Drama\n2::B (1996)\n", "line 2: 2 fields, expected 3: "
                                                                "MovieID::Title::Genres"),
    ("ml-1m", "movies.dat", "one::A (1995)::Drama\n", "line 1: MovieID 'one' is not a "
                                                      "non-negative integer id"),
    ("ml-1m", "movies.dat", "0::A (1995)::Drama\n", "line 1: MovieID '0': MovieLens ids start"),
    ("gowalla", "train.txt", "0 0 1\n1\n", "line 2: user '1' and no item"),
    ("gowalla", "train.txt", "0 0 1\n1 b\n", "line 2: item 'b' is not a non-negative integer"),
    ("gowalla", "test.txt", "0 2\nu1 0\n", "line 2: user 'u1' is not a non-negative integer"),
    ("gowalla", "train.txt", b"0 0 1\n\x00\x00", "line 2: binary data"),
    ("ml-latest-small", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,9\n1,2,5.0\n",
     "line 3: 3 fields, expected 4: userId,movieId,rating,timestamp"),
    ("ml-latest-small", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,\"4,5\",9\n",
     "line 2: rating '4,5' is not a number: a decimal comma? write 4.5"),
    ("ml-latest-small", "ratings.csv", "userId,movieId,rating,timestamp\n1,m1,4.0,9\n",
     "line 2: movieId 'm1' is not a non-negative integer id"),
    ("ml-latest-small", "movies.csv", "movieId,title,genres\n1,A (1995)\n",
     "line 2: 2 fields, expected 3: movieId,title,genres"),
    # an empty file of a named dataset is a damaged copy, not a dataset without rows
    ("ml-100k", "u.data", "", "no rows; expected rows of user item rating timestamp"),
    ("ml-100k", "u.item", "\n", "no rows; expected rows of id|title"),
    ("ml-100k", "u.genre", "", "no rows; expected rows of genre|index"),
    ("ml-1m", "implicit_train.txt", "", "no rows; expected rows of 'user item item ...'"),
    ("ml-1m", "movies.dat", "", "no rows; expected rows of MovieID::Title::Genres"),
    ("gowalla", "test.txt", "\n\n", "no rows; expected rows of 'user item item ...'"),
    ("ml-latest-small", "ratings.csv", "userId,movieId,rating,timestamp\n", "no rows"),
    ("ml-latest-small", "movies.csv", "", "no rows; expected movieId,title,genres rows"),
])
def test_a_bad_row_in_a_named_dataset_names_file_and_line(tmp_path, name, file, content,
                                                          message):
    if isinstance(content, bytes):
        root = tiny(tmp_path, name)
        (root / file).write_bytes(content)
    else:
        root = tiny(tmp_path, name, file, content)
    with pytest.raises(DataError) as err:
        load_dataset(name, root, ALL)
    assert str(err.value).startswith(f"{root / file}: {message}"), str(err.value)


@pytest.mark.parametrize("name", ["ml-100k", "gowalla", "ml-latest-small"])
def test_a_delimiter_for_a_named_dataset_is_refused(tmp_path, name):
    with pytest.raises(DataError, match=r"^data.delimiter=',' \(--delimiter\) applies to a "
                                        r"csv:PATH dataset only; '" + name):
        load_dataset(name, tiny(tmp_path, name), LoadOptions(delimiter=","))
