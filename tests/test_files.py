"""Reading interaction files as people have them (recore._files): every layout of the common
public logs, written here by the tests themselves, read with no options; overrides; errors
that say what was found and which option fixes it."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import recore
from recore import _files

# (user, item, value, timestamp) records, with a repeated pair (users 7, item 30).
USERS = [7, 7, 12, 3, 12, 7, 3, 44]
ITEMS = [30, 10, 10, 20, 40, 30, 50, 10]
VALUES = [4.0, 3.0, 5.0, 1.0, 2.5, 2.0, 4.5, 3.0]
TIMES = [978300760, 978302109, 978301968, 978300275, 978824291, 978302268, 978302039, 978300719]


def expected(values=True, times=True):
    return recore.Interactions(USERS, ITEMS, VALUES if values else None, TIMES if times else None)


def assert_same(data, reference):
    np.testing.assert_array_equal(data.user_ids, reference.user_ids)
    np.testing.assert_array_equal(data.item_ids, reference.item_ids)
    for part in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(data.matrix, part), getattr(reference.matrix, part))
    if reference.timestamps is None:
        assert data.timestamps is None
    else:
        np.testing.assert_array_equal(data.timestamps, reference.timestamps)


def lines(separator, header=None, columns=(USERS, ITEMS, VALUES, TIMES)):
    rows = [separator.join(str(value) for value in record) for record in zip(*columns)]
    return "\n".join(([header] if header else []) + rows) + "\n"


LAYOUTS = {
    # MovieLens 100K u.data: tab, no header, user item rating timestamp
    "u.data": (lines("\t"), "tab-separated, no header, 4 columns", True, True),
    # MovieLens 1M ratings.dat: '::', no header
    "ratings.dat": (lines("::"), "'::'-separated, no header, 4 columns", True, True),
    # MovieLens 20M ratings.csv: comma, header
    "ratings.csv": (lines(",", "userId,movieId,rating,timestamp"), "comma-separated, a header, 4 columns", True, True),
    # Last.fm hetrec user_artists.dat: tab, header, no timestamp
    "user_artists.dat": (
        lines("\t", "userID\tartistID\tweight", (USERS, ITEMS, VALUES)),
        "tab-separated, a header, 3 columns",
        True,
        False,
    ),
    "plain.csv": (lines(",", columns=(USERS, ITEMS)), "comma-separated, no header, 2 columns", False, False),
    "spaces.txt": (
        "\n".join(f"  {u}    {i}\t {v}  " for u, i, v in zip(USERS, ITEMS, VALUES)) + "\n",
        "whitespace-separated, no header, 3 columns",
        True,
        False,
    ),
    "semicolons.csv": (lines(";", '"User-ID";"ISBN";"Book-Rating"', (USERS, ITEMS, VALUES)), "semicolon", True, False),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_common_layouts_read_with_no_options(tmp_path, name):
    text, description, values, times = LAYOUTS[name]
    path = tmp_path / name
    path.write_text(text)
    layout = _files.sniff(path)
    assert layout.describe().startswith(description)
    assert_same(_files.read_interactions(path), expected(values, times))


def test_movielens_layouts_name_their_columns(tmp_path):
    (tmp_path / "ratings.csv").write_text(LAYOUTS["ratings.csv"][0])
    assert (
        _files.sniff(tmp_path / "ratings.csv")
        .describe()
        .endswith("user = 'userId', item = 'movieId', value = 'rating', timestamp = 'timestamp'")
    )
    (tmp_path / "u.data").write_text(LAYOUTS["u.data"][0])
    assert (
        _files.sniff(tmp_path / "u.data")
        .describe()
        .endswith("user = column 0, item = column 1, value = column 2, timestamp = column 3")
    )


def test_parquet_and_compressed_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"userId": USERS, "movieId": ITEMS, "rating": VALUES, "timestamp": TIMES})
    pq.write_table(table, tmp_path / "ratings.parquet")
    assert _files.sniff(tmp_path / "ratings.parquet").kind == "parquet"
    assert_same(_files.read_interactions(tmp_path / "ratings.parquet"), expected())
    with gzip.open(tmp_path / "u.data.gz", "wt") as file:
        file.write(LAYOUTS["u.data"][0])
    assert_same(_files.read_interactions(tmp_path / "u.data.gz"), expected())


def test_columns_by_position_and_by_name(tmp_path):
    # item first, then a timestamp, then user: positions say which is which
    path = tmp_path / "shuffled.tsv"
    path.write_text(lines("\t", columns=(ITEMS, TIMES, USERS)))
    data = _files.read_interactions(path, user=2, item="0", value=None, timestamp=1)
    assert_same(data, expected(values=False))
    named = tmp_path / "named.csv"
    named.write_text(lines(",", "when,who,what", (TIMES, USERS, ITEMS)))
    data = _files.read_interactions(named, user="who", item="what", timestamp="when")
    assert_same(data, expected(values=False))


def test_text_ids(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text(lines(",", "user,item", ([f"u{u}" for u in USERS], [f"item {i}" for i in ITEMS])))
    reference = recore.Interactions([f"u{u}" for u in USERS], [f"item {i}" for i in ITEMS])
    assert_same(_files.read_interactions(path), reference)


def test_header_override(tmp_path):
    # Text over text: nothing tells a header from data, so the first row is data unless told.
    path = tmp_path / "pairs.csv"
    path.write_text("u,i\nann,apple\nbob,pear\nann,pear\n")
    assert not _files.sniff(path).header
    assert list(_files.read_interactions(path).user_ids) == ["ann", "bob", "u"]
    told = _files.read_interactions(path, header=True, user="u", item="i")
    assert list(told.user_ids) == ["ann", "bob"] and list(told.item_ids) == ["apple", "pear"]
    # A header the sniffer recognises can be declared data, too.
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("1,2\n3,4\n")
    assert _files.read_interactions(numbers, header=False).matrix.nnz == 2
    assert _files.read_interactions(numbers, header=True, user=0, item=1).matrix.nnz == 1


def test_ids_that_turn_to_text_after_the_first_block(tmp_path):
    path = tmp_path / "late.csv"
    rows = [f"{u},{i}" for u, i in zip(range(5000), range(5000))] + ["x7,y7"]
    path.write_text("\n".join(rows) + "\n")
    layout = _files.sniff(path)
    columns = _files.read_columns(layout, block_bytes=4096)
    assert columns["user"].type == "string" and len(columns["user"]) == 5001


def test_separator_option_names(tmp_path):
    path = tmp_path / "u.data"
    path.write_text(LAYOUTS["u.data"][0])
    for sep in ("\t", "tab", "\\t"):
        assert _files.sniff(path, sep=sep).separator == "\t"
    with pytest.raises(ValueError, match="sep must be one of"):
        _files.sniff(path, sep="#")


def test_the_reader_matches_the_constructor_on_many_records():
    """The packed sort and the direct assembly give exactly what Interactions builds."""
    rng = np.random.default_rng(3)
    users = rng.integers(0, 400, 20_000) * 11 + 5
    items = rng.integers(0, 90, 20_000)
    values = rng.random(20_000).astype(np.float32)
    times = rng.integers(0, 10**9, 20_000)
    user_codes, user_ids = _files._integer_codes(users)
    item_codes, item_ids = _files._integer_codes(items)
    order, keys = _files._pair_order(user_codes, item_codes, len(item_ids))
    np.testing.assert_array_equal(order, np.lexsort((item_codes, user_codes)))
    np.testing.assert_array_equal(keys, user_codes[order].astype(np.int64) * len(item_ids) + item_codes[order])
    assembled = _files._assemble(user_codes, item_codes, user_ids, item_ids, values, times, "sum")
    assert_same(assembled, recore.Interactions(users, items, values, times))
    assert assembled.matrix.has_canonical_format
    # Without values, and with every pair once (no sums to make).
    unique = np.unique(users * 1000 + items, return_index=True)[1]
    for keep in (slice(None), unique):
        u, i, t = users[keep], items[keep], times[keep]
        user_codes, user_ids = _files._integer_codes(u)
        item_codes, item_ids = _files._integer_codes(i)
        assembled = _files._assemble(user_codes, item_codes, user_ids, item_ids, None, t, "sum")
        assert_same(assembled, recore.Interactions(u, i, None, t))
    with pytest.raises(ValueError, match="more than once"):
        _files._assemble(user_codes[[0, 0]], item_codes[[0, 0]], user_ids, item_ids, None, None, "error")


def test_interactions_from_csv_reads_every_layout(tmp_path):
    (tmp_path / "ratings.dat").write_text(LAYOUTS["ratings.dat"][0])
    data = recore.Interactions.from_csv(tmp_path / "ratings.dat", value="auto", timestamp="auto")
    assert_same(data, expected())
    # value=None (the default) counts every record once
    assert_same(recore.Interactions.from_csv(tmp_path / "ratings.dat"), expected(values=False, times=False))


# -- errors: what was found, and the option that fixes it ------------------------------------------


def test_a_name_in_a_file_without_header(tmp_path):
    path = tmp_path / "u.data"
    path.write_text(LAYOUTS["u.data"][0])
    with pytest.raises(ValueError, match=r"no header row.*--user 0.*--header"):
        _files.sniff(path, user="user")


def test_a_name_the_header_does_not_have(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text(LAYOUTS["ratings.csv"][0])
    with pytest.raises(ValueError, match=r"no column 'customer'.*'userId', 'movieId'.*--user"):
        _files.sniff(path, user="customer")


def test_a_position_beyond_the_columns(tmp_path):
    path = tmp_path / "u.data"
    path.write_text(LAYOUTS["u.data"][0])
    with pytest.raises(IndexError, match=r"item: column 7 does not exist.*4 columns"):
        _files.sniff(path, item=7)


def test_unknown_header_names(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match=r"cannot tell which column holds the users.*'a', 'b', 'c'.*--user"):
        _files.sniff(path)


def test_no_separator_fits(tmp_path):
    path = tmp_path / "ragged.txt"
    path.write_text("1,2,3\n4\n5 6\n")
    with pytest.raises(ValueError, match=r"could not tell how the columns are separated.*--sep"):
        _files.sniff(path)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(ValueError, match="is empty"):
        _files.sniff(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        _files.sniff(tmp_path / "missing.csv")
    (tmp_path / "header.csv").write_text("userId,movieId\n")
    with pytest.raises(ValueError, match="no interactions after the header"):
        _files.read_interactions(tmp_path / "header.csv")


def test_text_in_the_value_column(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating\n1,2,4\n" + "".join(f"{u},{u},3\n" for u in range(3000)) + "5,6,good\n")
    with pytest.raises(ValueError, match=r"good.*the value column.*--no-value"):
        _files.read_interactions(path, value="auto")


def test_a_row_with_more_columns(tmp_path):
    # Beyond the first lines, which decide the layout.
    path = tmp_path / "u.data"
    path.write_text(LAYOUTS["u.data"][0] * 100 + "1\t2\t3\t4\t5\n")
    with pytest.raises(ValueError, match=r"Expected 4 columns, got 5.*read as tab-separated, no header.*--sep"):
        _files.read_interactions(path)


def test_bad_arguments(tmp_path):
    path = tmp_path / "u.data"
    path.write_text(LAYOUTS["u.data"][0])
    with pytest.raises(TypeError, match="header must be"):
        _files.sniff(path, header="yes")
    with pytest.raises(TypeError, match="user must be a column name or position"):
        _files.sniff(path, user=1.5)
    with pytest.raises(ValueError, match="item must name a column"):
        _files.sniff(path, item=None)
    with pytest.raises(ValueError, match="one column cannot hold two roles"):
        _files.sniff(path, user=0, item=0)
    with pytest.raises(ValueError, match="duplicates"):
        _files.read_interactions(path, duplicates="keep")
    with pytest.raises(IsADirectoryError):
        _files.sniff(tmp_path)
