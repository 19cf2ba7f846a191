"""The ``recore`` command as people use it: driven in a subprocess on small files of every
common layout (written by the tests), with output meant for pipes, and ``recore bench``'s study,
report, chart and built-in data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import recore
import scipy.sparse as sp
from recore import _bench, evaluation


def recore_command(*args, cwd, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recore", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        **options,
    )


def records(n_users=60, n_items=40, n=900, seed=0):
    """(user, item, rating, timestamp) records with a little structure: two groups of users
    who like two halves of the catalogue."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    half = n_items // 2
    items = np.where(users % 2 == 0, rng.integers(0, half, n), rng.integers(half, n_items, n))
    ratings = rng.integers(1, 6, n)
    times = rng.integers(880_000_000, 890_000_000, n)
    rows = {}
    for u, i, r, t in zip(users, items, ratings, times):  # one rating per pair, as MovieLens has
        rows.setdefault((int(u) + 1, int(i) + 101), (int(r), int(t)))
    return [(u, i, r, t) for (u, i), (r, t) in rows.items()]


def write(path, rows, separator="\t", header=None):
    lines = ([header] if header else []) + [separator.join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- recore fit on every common layout ----------------------------------------------------------------

LAYOUTS = {
    "u.data": ("\t", None, (0, 1, 2, 3), "tab-separated, no header, 4 columns"),
    "ratings.dat": ("::", None, (0, 1, 2, 3), "'::'-separated, no header, 4 columns"),
    "ratings.csv": (",", "userId,movieId,rating,timestamp", (0, 1, 2, 3), "comma-separated, a header, 4 columns"),
    "user_artists.dat": ("\t", "userID\tartistID\tweight", (0, 1, 2), "tab-separated, a header, 3 columns"),
    "pairs.csv": (",", None, (0, 1), "comma-separated, no header, 2 columns"),
    "pairs.txt": ("   ", None, (0, 1, 2), "whitespace-separated, no header, 3 columns"),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS) + ["ratings.parquet", "by-position.tsv"])
def test_fit_reads_each_layout_with_no_options(tmp_path, name):
    rows = records()
    extra = []
    if name == "ratings.parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*rows))
        pq.write_table(pa.table({"userId": columns[0], "movieId": columns[1], "rating": columns[2]}), tmp_path / name)
        described = "Parquet, 3 columns"
    elif name == "by-position.tsv":  # item, timestamp, user: columns by position
        write(tmp_path / name, [(i, t, u) for u, i, _, t in rows])
        extra = ["--user", "2", "--item", "0", "--no-timestamp"]
        described = "tab-separated, no header, 3 columns; user = column 2, item = column 0"
    else:
        separator, header, keep, described = LAYOUTS[name]
        write(tmp_path / name, [tuple(row[k] for k in keep) for row in rows], separator, header)
    result = recore_command("fit", name, "--factors", 4, "--iterations", 2, "--out", "model.npz", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert described in result.stderr
    assert result.stdout == ""  # messages go to stderr; stdout is for data
    with np.load(tmp_path / "model.ids.npz") as ids:
        assert sorted(ids["user_ids"].tolist()) == sorted({row[0] for row in rows})
        assert sorted(ids["item_ids"].tolist()) == sorted({row[1] for row in rows})
    assert recore.load(tmp_path / "model.npz").user_factors_.shape == (len({row[0] for row in rows}), 4)


def test_a_headerless_file_named_by_column(tmp_path):
    """MovieLens u.data has no header: asking for a column by name says so and how to fix it
    (the first row is never silently taken as a header)."""
    write(tmp_path / "u.data", records())
    result = recore_command("fit", "u.data", "--user", "user", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "recore: error:" in result.stderr and "no header row" in result.stderr and "--user 0" in result.stderr
    write(tmp_path / "ratings.csv", records(), ",", "userId,movieId,rating,timestamp")
    result = recore_command("fit", "ratings.csv", "--item", "itemId", cwd=tmp_path)
    assert result.returncode == 2 and "no column 'itemId'" in result.stderr and "'movieId'" in result.stderr


# -- recommend and evaluate: output for pipes -----------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model fitted on a MovieLens-100K-style training file, with its held-out file."""
    directory = tmp_path_factory.mktemp("fitted")
    rows = records(n=1200)
    rng = np.random.default_rng(1)
    held_out = rng.random(len(rows)) < 0.2
    write(directory / "train.data", [r for r, out in zip(rows, held_out) if not out])
    write(directory / "test.data", [r for r, out in zip(rows, held_out) if out])
    result = recore_command("fit", "train.data", "--factors", 8, "--iterations", 4, "--quiet", cwd=directory)
    assert result.returncode == 0 and result.stderr == ""
    train = {}
    for user, item, *_ in (r for r, out in zip(rows, held_out) if not out):
        train.setdefault(user, set()).add(item)
    return directory, train


def test_recommend_tsv_with_a_header(fitted):
    directory, train = fitted
    result = recore_command("recommend", "model.npz", "--data", "train.data", "--users", "2,5", "--k", 3, cwd=directory)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "user\trank\titem\tscore"
    table = [line.split("\t") for line in lines[1:]]
    assert [(user, rank) for user, rank, _, _ in table] == [
        ("2", "1"),
        ("2", "2"),
        ("2", "3"),
        ("5", "1"),
        ("5", "2"),
        ("5", "3"),
    ]
    for user, _, item, score in table:
        assert int(item) not in train[int(user)]  # seen items are left out
        float(score)
    scores = [float(row[3]) for row in table[:3]]
    assert scores == sorted(scores, reverse=True)


def test_recommend_json_lines(fitted, tmp_path):
    directory, _ = fitted
    (tmp_path / "users.txt").write_text("3\n4\n")
    result = recore_command(
        "recommend", directory / "model.npz", "--users-file", "users.txt", "--k", 4, "--format", "json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [answer["user"] for answer in answers] == [3, 4]  # numbers stay numbers
    assert all(len(a["items"]) == 4 and len(a["scores"]) == 4 for a in answers)
    result = recore_command("recommend", directory / "model.npz", "--users", "3,nobody", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "" and "unknown id 'nobody'" in result.stderr


def test_evaluate_tsv_and_json(fitted):
    directory, _ = fitted
    result = recore_command("evaluate", "model.npz", "train.data", "test.data", "--k", 5, "--quiet", cwd=directory)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "metric\tvalue"
    metrics = dict(line.split("\t") for line in lines[1:])
    assert 0 < float(metrics["ndcg@5"]) <= 1 and int(metrics["users"]) > 0
    result = recore_command(
        "evaluate", "model.npz", "train.data", "test.data", "--k", 5, "--format", "json", cwd=directory
    )
    answer = json.loads(result.stdout)
    assert answer["k"] == 5 and answer["ndcg"] == pytest.approx(float(metrics["ndcg@5"]), rel=1e-5)


def test_version_and_info(tmp_path):
    result = recore_command("--version", cwd=tmp_path)
    assert result.stdout.strip() == f"recore {recore.__version__}"
    result = recore_command("info", cwd=tmp_path)
    assert result.returncode == 0
    assert f"CPU target              {recore.cpu_target()}" in result.stdout
    assert "threads" in result.stdout and "CUDA engine" in result.stdout
    info = json.loads(recore_command("info", "--format", "json", cwd=tmp_path).stdout)
    assert info["recore"] == recore.__version__
    usable = recore.cuda.is_available()
    assert info["CUDA engine"].startswith("usable" if usable else "not usable: ")


# -- what a person sees ------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_progress_bars_only_at_a_terminal(tmp_path):
    """A log or a pipe gets one plain line per iteration; a terminal gets tqdm's bar (which
    redraws itself with carriage returns) instead."""
    import fcntl
    import pty
    import struct
    import termios

    write(tmp_path / "u.data", records())
    piped = recore_command("fit", "u.data", "--factors", 4, "--iterations", 3, cwd=tmp_path)
    assert piped.returncode == 0
    assert "\r" not in piped.stderr and "\x1b" not in piped.stderr
    assert [line.strip() for line in piped.stderr.splitlines() if "iteration" in line][-1].startswith("iteration 3/3")

    controller, terminal = pty.openpty()
    # A terminal 100 columns wide (a new pseudo-terminal has none, and tqdm draws to its width).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "recore", "fit", "u.data", "--factors", "4", "--iterations", "3"],
        cwd=tmp_path,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0
    text = seen.decode(errors="replace")
    assert "ALS: 100%|" in text and "3/3 [" in text and "iteration 1/3" not in text


# -- recore bench ------------------------------------------------------------------------------------


TINY = ["--users", 300, "--items", 60, "--nnz", 3000, "--factors", 4, "--iterations", 2, "--bpr-iterations", 2]


def test_bench_runs_the_study_and_writes_report_and_chart(tmp_path):
    result = recore_command("bench", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\r" not in out and "\x1b" not in out  # no progress bar in a log
    assert "ALS regularization by validation NDCG@10" in out
    report = (tmp_path / "recore-bench.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    labels = [row.split(" | ")[0][2:] for row in rows]
    assert labels[:4] == ["most popular", "ALS, CG", "ALS, Cholesky", "BPR (SGD)"]
    assert labels[4:6] == ["ALS, tuned", "iALS, tuned"]  # searched by evaluation.tune, fitted like the others
    assert "Tuned rows: `recore.evaluation.tune`" in report and "iALS, tuned: regularization=" in report
    assert labels[-1] == "planted preferences"
    assert "| most popular | baseline |" in report and "| planted preferences | reference |" in report
    assert "/proc/self/clear_refs" in report or "cannot reset the peak" in report
    chart = ElementTree.parse(tmp_path / "recore-bench.svg").getroot()
    circles = [element for element in chart.iter() if element.tag.endswith("circle")]
    assert len(circles) >= 3 * (len(labels) - 1) + len(labels)  # markers in each panel, and the legend
    assert f"chart written to {tmp_path / 'recore-bench.svg'}" in out


def test_bench_in_process(tmp_path, capsys, monkeypatch):
    """``recore.cli.main`` as a program embedding it calls it: lines through sys.stdout, every
    worker's pipes closed (an unclosed one would fail the test as a warning)."""
    from recore.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["bench", *map(str, TINY), "--regularization", "1", "--chart", "", "--no-peers"]) == 0
    out = capsys.readouterr().out
    assert "most popular" in out and "| ALS, CG | recore |" in out
    assert (tmp_path / "recore-bench.md").exists() and not (tmp_path / "recore-bench.svg").exists()


def test_bench_on_a_rated_file(tmp_path):
    write(tmp_path / "u.data", records(n=1500))
    result = recore_command(
        "bench",
        "--data",
        "u.data",
        "--factors",
        4,
        "--iterations",
        2,
        "--bpr-iterations",
        2,
        "--mf-iterations",
        2,
        "--regularization",
        1,
        "--no-peers",
        "--report",
        "study.md",
        "--chart",
        "",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "read u.data: tab-separated, no header, 4 columns" in result.stdout
    report = (tmp_path / "study.md").read_text()
    assert "| biased MF (SGD), fits ratings | recore |" in report and "RMSE |" in report
    assert "planted preferences" not in report and "ALS regularization: chosen" not in report
    assert not (tmp_path / "recore-bench.svg").exists()


def test_bench_refuses_bad_sizes(tmp_path):
    result = recore_command("bench", "--users", 0, cwd=tmp_path)
    assert result.returncode == 2 and "--users must be at least 1" in result.stderr
    result = recore_command("bench", "--users", 10, "--items", 10, "--nnz", 101, cwd=tmp_path)
    assert result.returncode == 2 and "--nnz" in result.stderr


def test_memory_is_measured_per_step():
    if not _bench._reset_peak():
        pytest.skip("this system cannot reset a process's peak memory (/proc/self/clear_refs)")
    with _bench._Memory() as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    del block
    assert 60 < memory.mib < 100
    with _bench._Memory() as memory:  # the peak was reset: the block above does not count again
        pass
    assert memory.mib < 8


def test_peers_are_rows_only_when_installed(monkeypatch):
    settings = _bench.Settings(regularization=10.0)
    monkeypatch.setattr(_bench, "_importable", lambda module: False)
    plain = _bench.candidates(settings, ratings=False, planted=True)
    assert [row.source for row in plain] == ["baseline", "recore", "recore", "recore", "reference"]
    monkeypatch.setattr(_bench, "_importable", lambda module: module == "faiss")
    with_faiss = _bench.candidates(settings, ratings=True, planted=False)
    assert [row.label for row in with_faiss if row.source == "peer"] == ["ALS, CG + faiss top-k"]
    assert with_faiss[-1].needs == "ALS, CG"
    assert not [
        row
        for row in _bench.candidates(_bench.Settings(peers=False), ratings=False, planted=False)
        if row.source == "peer"
    ]


def test_chart_axes_end_on_round_numbers():
    for value, top in ((0.224, 0.25), (8.16, 10), (17.3, 20), (0.28, 0.3), (123_456, 150_000)):
        assert _bench._nice_ceiling(value) == pytest.approx(top)
        ticks = _bench._ticks(_bench._nice_ceiling(value))
        assert ticks[0] == 0 and ticks[-1] == pytest.approx(top) and 3 <= len(ticks) <= 7


# -- the built-in data -------------------------------------------------------------------------------


def test_synthetic_preferences_is_seeded_and_canonical():
    first = recore.datasets.synthetic_preferences(500, 120, 6000, random_state=3)
    again = recore.datasets.synthetic_preferences(500, 120, 6000, random_state=3)
    other = recore.datasets.synthetic_preferences(500, 120, 6000, random_state=4)
    assert (first != again).nnz == 0 and (first != other).nnz > 0
    assert first.shape == (500, 120) and first.dtype == np.float32 and first.has_canonical_format
    assert 0.97 * 6000 <= first.nnz <= 6000 and first.data.min() >= 1


def test_synthetic_preferences_plants_preferences_beyond_popularity():
    matrix, tastes, topics = recore.datasets.synthetic_preferences(2000, 300, 40_000, return_model=True)
    assert tastes.shape == (2000, 16) and topics.shape == (300, 16)
    np.testing.assert_allclose(tastes.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(topics.sum(axis=0), 1, rtol=1e-5)
    train, test = evaluation.random_split(matrix, 0.2, random_state=0)
    planted, _ = recore.topk(tastes, topics, 10, exclude=train)
    counts = np.bincount(train.indices, minlength=300).astype(np.float32)[:, None]
    popular, _ = recore.topk(np.ones((2000, 1), np.float32), counts, 10, exclude=train)
    ndcg = {
        name: evaluation.ranking_metrics_at_k(ids, test, train=train)["ndcg"]
        for name, ids in (("planted", planted), ("popular", popular))
    }
    assert ndcg["planted"] > 2 * ndcg["popular"] > 0
    # popularity skew: the most drawn tenth of the items holds far more than a tenth of the draws
    per_item = np.sort(np.asarray(matrix.sum(axis=0)).ravel())[::-1]
    assert per_item[:30].sum() > 0.3 * per_item.sum()


def test_synthetic_preferences_checks_its_arguments():
    with pytest.raises(ValueError, match="taste_concentration must be > 0"):
        recore.datasets.synthetic_preferences(10, 10, 10, taste_concentration=0)
    with pytest.raises(ValueError, match="exceeds"):
        recore.datasets.synthetic_preferences(10, 10, 101)
    with pytest.raises(TypeError, match="return_model must be a bool"):
        recore.datasets.synthetic_preferences(10, 10, 10, return_model="yes")
    with pytest.raises(ValueError, match="rank"):
        recore.datasets.synthetic_preferences(10, 10, 10, rank=0)
    assert sp.issparse(recore.datasets.synthetic_preferences(3, 2, 0))
