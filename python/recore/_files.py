"""Reading interaction files as people have them.

Public interaction logs come in a handful of shapes: MovieLens 100K's ``u.data`` (tab
separated, no header: user, item, rating, timestamp), MovieLens 1M's ``ratings.dat`` (the same
four columns separated by ``::``), MovieLens 20M's ``ratings.csv`` (comma separated with the
header ``userId,movieId,rating,timestamp``), Last.fm's hetrec ``user_artists.dat`` (tab
separated with the header ``userID artistID weight``), and plain CSV, whitespace-separated or
Parquet files of the same columns. :func:`sniff` looks at the first lines of a file and works
out its layout (separator, whether the first row is a header, which column holds what);
:func:`read_interactions` then streams the whole file through pyarrow's CSV (or Parquet)
reader in record batches, so the text is never turned into Python objects row by row.

Column choices: ``"auto"`` finds the column (by its header name, or by position in a headerless
file: user, item, then a numeric value, then a timestamp), an int (or a string of digits)
is a position counted from 0, any other string a header name, and ``None`` (value and
timestamp only) reads no such column.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["FileLayout", "read_interactions", "sniff"]

#: Header names (lower case, without ``_``, ``-``, ``.`` or spaces) recognised for each role.
KNOWN_NAMES = {
    "user": (
        "user",
        "userid",
        "users",
        "uid",
        "customer",
        "customerid",
        "visitor",
        "visitorid",
        "member",
        "memberid",
        "reviewer",
        "reviewerid",
        "account",
        "accountid",
        "session",
        "sessionid",
    ),
    "item": (
        "item",
        "itemid",
        "items",
        "iid",
        "movie",
        "movieid",
        "artist",
        "artistid",
        "product",
        "productid",
        "track",
        "trackid",
        "song",
        "songid",
        "book",
        "bookid",
        "isbn",
        "asin",
        "article",
        "articleid",
        "video",
        "videoid",
        "anime",
        "animeid",
        "game",
        "gameid",
        "business",
        "businessid",
        "recipe",
        "recipeid",
        "title",
        "titleid",
    ),
    "value": (
        "value",
        "rating",
        "ratings",
        "score",
        "weight",
        "count",
        "counts",
        "plays",
        "playcount",
        "listens",
        "clicks",
        "quantity",
        "stars",
        "preference",
        "strength",
        "bookrating",
    ),
    "timestamp": (
        "timestamp",
        "time",
        "ts",
        "date",
        "datetime",
        "eventtime",
        "unixtime",
        "unixreviewtime",
        "tdat",
        "created",
        "createdat",
    ),
}

#: Separators tried, in this order, with the names used in messages and accepted by ``sep``.
SEPARATORS = {"::": "'::'", "\t": "tab", ",": "comma", ";": "semicolon", "|": "'|'", " ": "whitespace"}
_SEPARATOR_NAMES = {
    "tab": "\t",
    "\\t": "\t",
    "comma": ",",
    "semicolon": ";",
    "pipe": "|",
    "space": " ",
    "spaces": " ",
    "whitespace": " ",
    "::": "::",
    "\t": "\t",
    ",": ",",
    ";": ";",
    "|": "|",
    " ": " ",
}
# Multi-character and run-of-blanks separators are rewritten to this one, which no text holds,
# before pyarrow (whose delimiter is one character) parses the stream.
_UNIT_SEPARATOR = "\x1f"
_SAMPLE_BYTES = 1 << 16
_SAMPLE_LINES = 200
_BLOCK_BYTES = 1 << 24
_INTEGER = re.compile(r"^[+-]?\d+$")
# Unix times in seconds or milliseconds from 1973 on: 9 to 13 digits.
_UNIX_TIME = re.compile(r"^\d{9,13}$")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def _normalized(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.strip().strip('"').lower())


def separator_from_option(sep) -> str | None:
    """``sep`` as given by a caller ("tab", "\\t", ",", "whitespace", "::", ...) or None."""
    if sep is None:
        return None
    if not isinstance(sep, str):
        raise TypeError(f"sep must be a string, got {type(sep).__name__}")
    try:
        return _SEPARATOR_NAMES[sep.lower() if len(sep) > 2 else sep]
    except KeyError:
        raise ValueError(
            f"sep must be one of comma (','), tab ('\\t'), semicolon (';'), '|', '::' or whitespace, got {sep!r}"
        ) from None


@dataclass(frozen=True)
class FileLayout:
    """What :func:`sniff` found out about a file.

    Attributes
    ----------
    path : str
    kind : {"text", "parquet"}
    separator : str or None
        One of :data:`SEPARATORS` (``" "`` for runs of blanks); None for Parquet.
    header : bool
        Whether the first line names the columns (always True for Parquet).
    columns : tuple of str
        Header names, or ``"0"``, ``"1"``, ... without a header.
    user, item : int
        Positions of the user and item columns.
    value, timestamp : int or None
        Positions of the value and timestamp columns, or None when not read.
    first_line : str
        The file's first line as text (empty for Parquet), for messages.
    """

    path: str
    kind: str
    separator: str | None
    header: bool
    columns: tuple
    user: int
    item: int
    value: int | None
    timestamp: int | None
    first_line: str = ""

    def describe(self) -> str:
        """One line for people: format, header, and which column holds what."""
        if self.kind == "parquet":
            form = f"Parquet, {len(self.columns)} columns"
        else:
            heading = "a header" if self.header else "no header"
            form = f"{SEPARATORS[self.separator]}-separated, {heading}, {len(self.columns)} columns"
        roles = [f"user = {self._name(self.user)}", f"item = {self._name(self.item)}"]
        roles.append(f"value = {self._name(self.value)}" if self.value is not None else "value = 1 per line")
        if self.timestamp is not None:
            roles.append(f"timestamp = {self._name(self.timestamp)}")
        return f"{form}; " + ", ".join(roles)

    def _name(self, position: int) -> str:
        return repr(self.columns[position]) if self.header else f"column {position}"


# -- sniffing -----------------------------------------------------------------------------------


def _open_text_sample(path: str) -> tuple[str, bool]:
    """The first bytes of a (possibly compressed) text file, decoded, and whether they are the
    whole file."""
    import pyarrow as pa

    with pa.input_stream(path, compression="detect") as stream:
        data = stream.read(_SAMPLE_BYTES + 1)
    whole = len(data) <= _SAMPLE_BYTES
    text = data[:_SAMPLE_BYTES].decode("utf-8", errors="replace")
    return text.lstrip("\ufeff"), whole


def _sample_lines(text: str, whole: bool) -> list[str]:
    lines = text.splitlines()
    if not whole and lines:
        lines = lines[:-1]  # cut in the middle
    return [line for line in lines if line.strip()][:_SAMPLE_LINES]


def _split(line: str, separator: str) -> list[str]:
    if separator == " ":
        return line.split()
    if separator == "::":
        return line.split("::")
    return next(csv.reader([line], delimiter=separator))


def _field_count(lines: list[str], separator: str) -> int:
    """The number of fields every line has when cut at ``separator``, or 0 if they differ."""
    counts = {len(_split(line, separator)) for line in lines}
    return counts.pop() if len(counts) == 1 else 0


def _find_separator(lines: list[str], path: str) -> str:
    """The first separator that cuts every sampled line into the same number (>= 2) of fields;
    runs of blanks instead where that one leaves blanks inside fields on every line and the
    blanks give more fields (tabs and spaces mixed)."""
    blanks = _field_count(lines, " ")
    for separator in SEPARATORS:
        count = _field_count(lines, separator)
        if count < 2:
            continue
        mixed = all(any(len(field.split()) > 1 for field in _split(line, separator)) for line in lines)
        if separator != " " and blanks > count and mixed:
            continue
        return separator
    raise ValueError(
        f"{path}: could not tell how the columns are separated: no separator among "
        f"{', '.join(SEPARATORS.values())} cuts its first {len(lines)} lines into the same number of fields "
        f"(first line: {lines[0][:120]!r}); pass --sep (sep=)"
    )


def _looks_like_header(first: list[str], rest: list[list[str]]) -> bool:
    """A first row naming a known role, or holding text above a column of numbers."""
    if any(_normalized(field) in names for field in first for names in KNOWN_NAMES.values()):
        return True
    if not rest:
        return not any(_number(field) for field in first)
    for column, field in enumerate(first):
        below = [row[column] for row in rest if column < len(row)]
        if below and all(_number(value) for value in below) and not _number(field):
            return True
    return False


def _position(choice, columns: tuple, header: bool, role: str, flag: str, path: str, first_line: str) -> int:
    """A column given by position (int or digits) or header name, as a position."""
    if isinstance(choice, bool) or not isinstance(choice, (int, np.integer, str)):
        raise TypeError(f"{role} must be a column name or position, got {type(choice).__name__}")
    if isinstance(choice, str) and choice.strip().isdigit():
        choice = int(choice)
    if isinstance(choice, (int, np.integer)):
        if not 0 <= choice < len(columns):
            raise IndexError(
                f"{role}: column {choice} does not exist: {path} has {len(columns)} columns (0 to {len(columns) - 1})"
            )
        return int(choice)
    if not header:
        raise ValueError(
            f"{role}: {path} has no header row to find the column {choice!r} in (its first line: "
            f"{first_line[:120]!r}); give the column's position ({flag} 0 for the first) or, if the first line "
            f"does name the columns, pass --header (header=True)"
        )
    names = [_normalized(name) for name in columns]
    if choice in columns:
        return columns.index(choice)
    if _normalized(choice) in names:
        return names.index(_normalized(choice))
    raise ValueError(
        f"{role}: {path} has no column {choice!r}; its header has {', '.join(map(repr, columns))}; "
        f"pass {flag} with one of these names or a position"
    )


def _auto_column(role: str, columns: tuple, header: bool, rows: list[list[str]], taken: set) -> int | None:
    """Where a column of ``role`` is, when the caller did not say."""
    if header:
        names = [_normalized(name) for name in columns]
        for position, name in enumerate(names):
            if position not in taken and name in KNOWN_NAMES[role]:
                return position
        if role == "value":  # "Book-Rating", "movie_rating", ...
            return next((p for p, n in enumerate(names) if p not in taken and "rating" in n), None)
        return None
    # No header: user, item, then a number that is not a Unix time, then a Unix time.
    if role == "user":
        return 0
    if role == "item":
        return 1
    for position in range(2, len(columns)):
        if position in taken:
            continue
        values = [row[position].strip() for row in rows if position < len(row)]
        times = all(_UNIX_TIME.match(value) for value in values)
        numbers = all(_number(value) for value in values)
        if role == "value" and numbers and not times:
            return position
        if role == "timestamp" and times:
            return position
    return None


def sniff(path, *, sep=None, header=None, user="auto", item="auto", value="auto", timestamp="auto") -> FileLayout:
    """Works out a file's layout from its first lines (or a Parquet file's schema).

    Parameters
    ----------
    path : str or os.PathLike
        A text file (optionally ``.gz``, ``.bz2``, ``.zst`` or ``.lz4`` compressed) or a Parquet file.
    sep : str, optional
        ``","``, ``"\\t"`` (or ``"tab"``), ``";"``, ``"|"``, ``"::"`` or ``"whitespace"``
        (runs of blanks); found from the first lines when not given.
    header : bool, optional
        Whether the first line names the columns; found when not given: it does when one of
        its fields is a known column name (``userId``, ``movieId``, ``rating``, ...) or when it
        holds text above a column of numbers.
    user, item, value, timestamp : "auto", int, str or None
        See the module docstring.

    Returns
    -------
    FileLayout
    """
    path = os.fspath(path)
    if header is not None and not isinstance(header, bool):
        raise TypeError(f"header must be True, False or None, got {type(header).__name__}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a file of interactions")
    if _is_parquet(path):
        import pyarrow.parquet as pq

        columns = tuple(pq.ParquetFile(path).schema_arrow.names)
        return _layout(path, "parquet", None, True, columns, [], user, item, value, timestamp, "")
    text, whole = _open_text_sample(path)
    lines = _sample_lines(text, whole)
    if not lines:
        raise ValueError(f"{path} is empty: no line of interactions")
    separator = separator_from_option(sep) or _find_separator(lines, path)
    rows = [_split(line, separator) for line in lines]
    width = len(rows[0])
    if width < 2:
        raise ValueError(
            f"{path}: its first line {lines[0][:120]!r} has one field when separated by "
            f"{SEPARATORS[separator]}; a file of interactions needs a user and an item column (pass --sep)"
        )
    if header is None:
        header = _looks_like_header(rows[0], rows[1:])
    columns = tuple(field.strip().strip('"') for field in rows[0]) if header else tuple(map(str, range(width)))
    data_rows = rows[1:] if header else rows
    return _layout(path, "text", separator, header, columns, data_rows, user, item, value, timestamp, lines[0])


def _layout(path, kind, separator, header, columns, rows, user, item, value, timestamp, first_line) -> FileLayout:
    choices = {"user": user, "item": item, "value": value, "timestamp": timestamp}
    positions: dict = {}
    # Columns named by the caller first, so that finding the others leaves them alone.
    for role, choice in choices.items():
        if choice is None:
            if role in ("user", "item"):
                raise ValueError(f"{role} must name a column: a file of interactions needs one")
            positions[role] = None
        elif not (isinstance(choice, str) and choice == "auto"):
            positions[role] = _position(choice, columns, header, role, f"--{role}", path, first_line)
    for role in choices:
        if role in positions:
            continue
        found = _auto_column(role, columns, header, rows, {p for p in positions.values() if p is not None})
        if found is None and role in ("user", "item"):
            raise ValueError(
                f"{path}: cannot tell which column holds the {role}s: its header has "
                f"{', '.join(map(repr, columns))}; pass --{role} with a column name or position"
            )
        positions[role] = found
    taken = [p for p in positions.values() if p is not None]
    if len(set(taken)) != len(taken):
        named = ", ".join(f"{role} = {p}" for role, p in positions.items() if p is not None)
        raise ValueError(f"{path}: one column cannot hold two roles ({named})")
    return FileLayout(path, kind, separator, header, columns, first_line=first_line, **positions)


def _is_parquet(path: str) -> bool:
    with open(path, "rb") as file:
        return file.read(4) == b"PAR1"


# -- streaming ----------------------------------------------------------------------------------


class _RewrittenSeparators(io.RawIOBase):
    """A byte stream with ``::`` (or runs of blanks, and blanks at the ends of lines) replaced
    by the unit separator, a whole line at a time: pyarrow's delimiter is one character."""

    def __init__(self, stream, separator: str):
        self._stream = stream
        self._whitespace = separator == " "
        self._pending = b""
        self._carry = b""
        self._done = False
        self._first = True

    def readable(self) -> bool:
        return True

    def _rewrite(self, block: bytes) -> bytes:
        if self._whitespace:
            block = re.sub(rb"(?m)^[ \t]+|[ \t]+(?=\r?$)", b"", block)
            return re.sub(rb"[ \t]+", b"\x1f", block)
        return block.replace(b"::", b"\x1f")

    def _fill(self) -> None:
        while not self._pending and not self._done:
            block = self._stream.read(_BLOCK_BYTES)
            if self._first:
                block, self._first = block.removeprefix(b"\xef\xbb\xbf"), False
            if not block:
                self._done = True
                block, self._carry = self._carry, b""
            else:
                block = self._carry + block
                cut = block.rfind(b"\n") + 1
                block, self._carry = block[:cut], block[cut:]
            self._pending = self._rewrite(block)

    def readinto(self, buffer) -> int:
        self._fill()
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class _Columns:
    """The columns read so far, one list of arrays per role."""

    def __init__(self, roles):
        self.chunks = {role: [] for role in roles}

    def add(self, batch, names: dict) -> None:
        for role, name in names.items():
            self.chunks[role].append(batch.column(batch.schema.get_field_index(name)))


def _csv_reader(layout: FileLayout, column_types: dict, block_bytes: int):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    stream = pa.input_stream(layout.path, compression="detect")
    delimiter = layout.separator
    if layout.separator in ("::", " "):
        stream = pa.PythonFile(io.BufferedReader(_RewrittenSeparators(stream, layout.separator)), mode="r")
        delimiter = _UNIT_SEPARATOR
    names = [f"c{position}" for position in range(len(layout.columns))]
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=block_bytes, column_names=names, skip_rows=int(layout.header)),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if len(delimiter) == 1 else False),
        convert_options=pacsv.ConvertOptions(
            include_columns=list(column_types), column_types=column_types, strings_can_be_null=False
        ),
    )


def _roles(layout: FileLayout) -> dict:
    return {
        role: position
        for role, position in (
            ("user", layout.user),
            ("item", layout.item),
            ("value", layout.value),
            ("timestamp", layout.timestamp),
        )
        if position is not None
    }


def _read_text(layout: FileLayout, types: dict, block_bytes: int) -> dict:
    roles = _roles(layout)
    column_types = {f"c{position}": types[role] for role, position in roles.items()}
    names = {role: f"c{position}" for role, position in roles.items()}
    columns = _Columns(roles)
    reader = _csv_reader(layout, column_types, block_bytes)
    try:
        for batch in reader:
            columns.add(batch, names)
    finally:
        reader.close()
    return columns.chunks


def _read_parquet(layout: FileLayout) -> dict:
    import pyarrow.parquet as pq

    roles = _roles(layout)
    names = {role: layout.columns[position] for role, position in roles.items()}
    columns = _Columns(roles)
    wanted = list(dict.fromkeys(names.values()))
    for batch in pq.ParquetFile(layout.path).iter_batches(batch_size=1 << 20, columns=wanted):
        columns.add(batch, names)
    return columns.chunks


def _conversion_error(error: Exception, layout: FileLayout) -> ValueError:
    """pyarrow's parse error, with what the file was taken to be and the flags that change it."""
    message = str(error).strip()
    for role, position in _roles(layout).items():
        if f"column #{position}:" in message or f"'c{position}'" in message:
            message += f" (the {role} column)"
    flags = "--sep, --header/--no-header, --user, --item, --value/--no-value, --timestamp/--no-timestamp"
    return ValueError(f"{layout.path}: {message}; read as {layout.describe()}; if that is wrong, pass {flags}")


def _column_types(layout: FileLayout) -> dict:
    """pyarrow types by role, from the sampled lines: int64 ids where they are all integers
    (text otherwise), float32 values, int64 timestamps where they are integers (ISO 8601
    times otherwise)."""
    import pyarrow as pa

    text, whole = _open_text_sample(layout.path)
    rows = [_split(line, layout.separator) for line in _sample_lines(text, whole)[int(layout.header) :]]
    types = {"value": pa.float32()}
    for role, whole_numbers, otherwise in (
        ("user", pa.int64(), pa.string()),
        ("item", pa.int64(), pa.string()),
        ("timestamp", pa.int64(), pa.timestamp("us")),
    ):
        position = getattr(layout, role)
        values = [row[position].strip().strip('"') for row in rows if position is not None and position < len(row)]
        types[role] = whole_numbers if values and all(_INTEGER.match(v) for v in values) else otherwise
    return types


def read_columns(layout: FileLayout, *, block_bytes: int = _BLOCK_BYTES) -> dict:
    """Every record's columns as pyarrow chunked arrays by role (``"user"``, ``"item"``, and
    ``"value"`` / ``"timestamp"`` where the layout has them)."""
    import pyarrow as pa

    if layout.kind == "parquet":
        chunks = _read_parquet(layout)
    else:
        types = _column_types(layout)
        try:
            chunks = _read_text(layout, types, block_bytes)
        except pa.ArrowInvalid as error:
            id_positions = {layout.user, layout.item}
            integer_ids = any(types[role] == pa.int64() for role in ("user", "item"))
            failed_on_id = any(f"column #{p}:" in str(error) for p in id_positions) and "int64" in str(error)
            if not (integer_ids and failed_on_id):
                raise _conversion_error(error, layout) from None
            # Integer ids in the first lines, text further down: read the ids as text.
            try:
                chunks = _read_text(layout, {**types, "user": pa.string(), "item": pa.string()}, block_bytes)
            except pa.ArrowInvalid as again:
                raise _conversion_error(again, layout) from None
    return {role: pa.chunked_array(arrays) if arrays else None for role, arrays in chunks.items()}


# -- to matrix ----------------------------------------------------------------------------------


def _codes(column, role: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, ids): ids sorted, codes[k] the index of record k's id in ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        raise ValueError(f"{path}: the {role} column has {column.null_count} empty values")
    if pa.types.is_integer(column.type):
        values = column.to_numpy()
        return _integer_codes(values)
    if pa.types.is_floating(column.type):
        values = column.to_numpy()
        if np.isnan(values).any():
            raise ValueError(f"{path}: the {role} column holds NaN")
        return _integer_codes(values) if np.all(values == np.rint(values)) else _sorted_codes(values)
    column = column.cast(pa.string()) if not pa.types.is_string(column.type) else column
    uniques = pc.unique(column)
    uniques = uniques.take(pc.sort_indices(uniques))
    codes = pc.index_in(column, value_set=uniques).to_numpy().astype(np.int64)
    return codes, np.asarray(uniques.to_numpy(zero_copy_only=False), dtype=str)


def _integer_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer ids to dense codes: by a table over the id range when it is small (linear time),
    else by sorting. Codes are int32 where the ids are fewer than 2**31 (half the memory of a
    large file's column)."""
    if values.size == 0:
        return values.astype(np.int64), values
    low, high = values.min(), values.max()
    if float(high) - float(low) < 4 * values.size + (1 << 20):
        offsets = values - low if low != 0 else values
        present = np.zeros(int(high - low) + 1, dtype=bool)
        present[offsets] = True
        index = np.cumsum(present, dtype=np.int64) - 1
        ids = (np.flatnonzero(present) + low).astype(values.dtype)
        return index.astype(np.int32 if len(ids) < 2**31 else np.int64)[offsets], ids
    return _sorted_codes(values)


def _sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), ids


def _values(column, path: str):
    if column is None:
        return None
    values = column.to_numpy()
    if column.null_count:
        raise ValueError(
            f"{path}: the value column has {column.null_count} empty values (pass --no-value to count lines)"
        )
    return values.astype(np.float32, copy=False)


def _timestamps(column, path: str):
    import pyarrow as pa

    if column is None:
        return None
    if column.null_count:
        raise ValueError(f"{path}: the timestamp column has {column.null_count} empty values (pass --no-timestamp)")
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return column.to_numpy()
    if not pa.types.is_integer(column.type):
        raise ValueError(
            f"{path}: the timestamp column holds {column.type}, not integers or times (pass --no-timestamp)"
        )
    return column.to_numpy().astype(np.int64, copy=False)


def read_interactions(
    path,
    *,
    sep=None,
    header=None,
    user="auto",
    item="auto",
    value="auto",
    timestamp="auto",
    duplicates: str = "sum",
    layout: FileLayout | None = None,
):
    """Reads a file of interactions into :class:`recore.Interactions`.

    The file is one of the layouts :func:`sniff` recognises (or the one given), streamed
    through pyarrow in blocks; ids may be numbers or text.

    Parameters
    ----------
    path : str or os.PathLike
    sep, header, user, item, value, timestamp
        As for :func:`sniff`.
    duplicates : {"sum", "error"}
        As for :class:`recore.Interactions`.
    layout : FileLayout, optional
        A layout already sniffed (the other layout arguments are then ignored).

    Returns
    -------
    recore.Interactions
    """
    from recore._validation import check_choice

    check_choice(duplicates, "duplicates", ("sum", "error"))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError("reading interaction files needs pyarrow (pip install pyarrow)") from None
    if layout is None:
        layout = sniff(path, sep=sep, header=header, user=user, item=item, value=value, timestamp=timestamp)
    columns = read_columns(layout)
    if columns["user"] is None or len(columns["user"]) == 0:
        raise ValueError(f"{layout.path}: no interactions after the header (read as {layout.describe()})")
    # Each column is let go once converted: a large file's columns are not all held twice.
    user_codes, user_ids = _codes(columns.pop("user"), "user", layout.path)
    item_codes, item_ids = _codes(columns.pop("item"), "item", layout.path)
    values = _values(columns.pop("value", None), layout.path)
    if values is not None and not np.isfinite(values).all():
        raise ValueError(f"{layout.path}: the value column holds NaN or infinity")
    timestamps = _timestamps(columns.pop("timestamp", None), layout.path)
    return _assemble(user_codes, item_codes, user_ids, item_ids, values, timestamps, duplicates)


def _pair_order(user_codes: np.ndarray, item_codes: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The records in (user, item) order, records of one pair in file order (the order
    ``np.lexsort((item_codes, user_codes))`` gives), and each one's pair key
    ``user * n_items + item`` in that order. The key and the record number are packed into
    one int64 where they fit, which one ``np.sort`` (vectorised) orders many times faster
    than ``lexsort`` or ``argsort``."""
    n = len(user_codes)
    record_bits = max(int(n - 1).bit_length(), 1)
    pairs = (int(user_codes.max()) + 1) * max(n_items, 1) if n else 1
    if pairs.bit_length() + record_bits > 63:
        order = np.lexsort((item_codes, user_codes))
        return order, user_codes[order].astype(np.int64) * n_items + item_codes[order]
    packed = user_codes.astype(np.int64)
    packed *= n_items
    packed += item_codes
    packed <<= record_bits
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    order = packed & ((1 << record_bits) - 1)
    packed >>= record_bits  # now the keys
    return order, packed


def _assemble(user_codes, item_codes, user_ids, item_ids, values, timestamps, duplicates: str):
    """:class:`recore.Interactions` from dense codes whose ids are known: the matrix and
    timestamps that its constructor makes from the ids (duplicates summed in file order, the
    latest timestamp kept), without sorting the ids again."""
    from recore.interactions import Interactions

    n, n_users, n_items = len(user_codes), len(user_ids), len(item_ids)
    order, keys = _pair_order(user_codes, item_codes, n_items)
    del user_codes, item_codes
    if n:
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        del first
    else:
        starts = np.zeros(0, np.int64)
    if duplicates == "error" and len(starts) != n:
        raise ValueError("some (user, item) pairs appear more than once (duplicates='error')")
    pairs = keys[starts] if len(starts) != n else keys
    del keys
    rows, cols = np.divmod(pairs, max(n_items, 1))
    del pairs
    index_type = np.int32 if max(len(starts), n_users, n_items) < 2**31 else np.int64
    indptr = np.zeros(n_users + 1, dtype=index_type)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    del rows

    def per_pair(column, reduce):
        in_order = column[order]
        return in_order if len(starts) == n else reduce.reduceat(in_order, starts)

    summed = np.ones(len(starts), np.float32) if values is None and len(starts) == n else None
    if summed is None:
        summed = per_pair(np.ones(n, np.float32) if values is None else values, np.add)
    data = Interactions.__new__(Interactions)
    # The attributes Interactions documents; the constructor would set the same ones.
    data.matrix = sp.csr_matrix(
        (summed.astype(np.float32, copy=False), cols.astype(index_type, copy=False), indptr),
        shape=(n_users, n_items),
    )
    data.timestamps = per_pair(timestamps, np.maximum) if timestamps is not None and n else timestamps
    data.user_ids, data.item_ids = user_ids, item_ids
    return data
