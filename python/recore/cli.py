"""The ``recore`` command.

``recore bench`` is recore's main job: a cost-effectiveness study (quality against fit time,
top-10 time and memory) of recore's models, the most popular items and, when installed, the
``implicit`` and ``faiss`` peers, on built-in synthetic data with planted preferences or on
your own file (``--data``); it writes a markdown report and an SVG chart (see
:mod:`recore._bench`). ``recore fit``, ``recommend`` and ``evaluate`` train, serve and score a
model on your files: CSV, TSV, ``::``- or whitespace-separated text with or without a header,
or Parquet, read as :mod:`recore._files` describes. ``recore info`` says what this
installation runs on.

Output is for pipes: ``recommend`` and ``evaluate`` print TSV with a header (or JSON with
``--format json``); messages go to stderr; progress bars appear only when both stdout and
stderr are terminals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import scipy.sparse as sp

import recore
from recore import _bench, _files, evaluation
from recore.movielens import SOURCES as MOVIELENS_SOURCES


def _interactive() -> bool:
    """Progress bars only for a person at a terminal: a log or a pipe gets plain lines."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def _messages(args):
    """Where lines for people go: stderr for the commands whose stdout is data, nowhere with --quiet."""
    if getattr(args, "quiet", False):
        return lambda *a, **k: None
    stream = sys.stdout if args.command == "bench" else sys.stderr
    return lambda *a, **k: print(*a, file=stream, flush=True, **k)


# -- reading files ------------------------------------------------------------------------------------


def _read(path: str, args, say) -> tuple[recore.Interactions, _files.FileLayout]:
    """A file of interactions as the reading options say (and how it was read), with a line
    for people on what was found."""
    layout = _files.sniff(
        path,
        sep=args.sep,
        header=args.header,
        user=args.user,
        item=args.item,
        value=args.value,
        timestamp=args.timestamp,
    )
    start = time.perf_counter()
    data = _files.read_interactions(path, layout=layout)
    seconds = time.perf_counter() - start
    say(f"read {path}: {layout.describe()}")
    say(f"  {data.shape[0]:,} users x {data.shape[1]:,} items, {data.matrix.nnz:,} interactions ({seconds:.2f} s)")
    return data, layout


def _add_reading(parser) -> None:
    group = parser.add_argument_group(
        "reading files",
        "Text files (comma, tab, semicolon, '|', '::' or whitespace separated, optionally gzip/bz2/zstd "
        "compressed) or Parquet. The separator, the header row and the columns are found from the first "
        "lines; MovieLens u.data / ratings.dat / ratings.csv and Last.fm user_artists.dat need no option. "
        "Columns are header names or positions counted from 0.",
    )
    group.add_argument("--sep", help="separator: comma, tab, semicolon, '|', '::' or whitespace")
    group.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the first line names the columns (default: found)",
    )
    group.add_argument("--user", default="auto", help="user id column (default: found)")
    group.add_argument("--item", default="auto", help="item id column (default: found)")
    group.add_argument("--value", default="auto", help="value column: rating, count, weight (default: found)")
    group.add_argument(
        "--no-value", dest="value", action="store_const", const=None, help="read no value column: every line counts 1"
    )
    group.add_argument("--timestamp", default="auto", help="timestamp column (default: found)")
    group.add_argument(
        "--no-timestamp", dest="timestamp", action="store_const", const=None, help="read no timestamp column"
    )


def _rating_like(data: recore.Interactions, layout: _files.FileLayout) -> bool:
    """Values that look like ratings (a few distinct positive levels), for biased MF."""
    if layout.value is None or data.matrix.nnz == 0:
        return False
    values = data.matrix.data
    return bool(values.min() > 0 and values.max() <= 100 and np.unique(values).size <= 20)


# -- bench ------------------------------------------------------------------------------------------


def _settings(args) -> _bench.Settings:
    return _bench.Settings(
        factors=args.factors,
        iterations=args.iterations,
        regularization=args.regularization,
        alpha=args.alpha,
        cg_steps=args.cg_steps,
        bpr_iterations=args.bpr_iterations,
        bpr_learning_rate=args.bpr_learning_rate,
        bpr_regularization=args.bpr_regularization,
        mf_iterations=args.mf_iterations,
        k=args.k,
        threads=args.threads,
        seed=args.seed,
        peers=args.peers,
    )


def _check_bench(args) -> None:
    for name in ("users", "items", "rank", "factors", "iterations", "cg_steps", "bpr_iterations", "mf_iterations", "k"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("nnz", "threads", "regularization", "alpha", "bpr_regularization"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(args, name)}")
    if args.nnz > args.users * args.items:
        raise ValueError(f"--nnz {args.nnz:,} exceeds --users x --items = {args.users * args.items:,}")


def _bench_data(args, say):
    """(interactions, ratings or None, planted model or None, a title, a description)."""
    if args.data:
        data, layout = _read(args.data, args, say)
        ratings = data.matrix if _rating_like(data, layout) else None
        name = os.path.basename(args.data)
        described = f"`{name}`: {data.shape[0]:,} users x {data.shape[1]:,} items, {data.matrix.nnz:,} interactions"
        if ratings is not None:
            described += " with ratings (biased MF fits them)"
        return data.matrix, ratings, None, f"recore bench on {name}", described + "."
    if args.dataset:
        movielens = recore.datasets.movielens(args.dataset)
        matrix = movielens.ratings
        described = (
            f"MovieLens {args.dataset}: {matrix.shape[0]:,} users x {matrix.shape[1]:,} items, "
            f"{matrix.nnz:,} ratings (biased MF fits them)."
        )
        return matrix, matrix, None, f"recore bench on MovieLens {args.dataset}", described
    start = time.perf_counter()
    matrix, tastes, topics = recore.datasets.synthetic_preferences(
        args.users, args.items, args.nnz, rank=args.rank, random_state=args.seed, return_model=True
    )
    say(
        f"built-in data: {matrix.shape[0]:,} users x {matrix.shape[1]:,} items, {matrix.nnz:,} interactions, "
        f"planted preferences of rank {args.rank} ({time.perf_counter() - start:.1f} s)"
    )
    described = (
        f"Built-in data: `recore.datasets.synthetic_preferences({args.users}, {args.items}, {args.nnz}, "
        f"rank={args.rank}, random_state={args.seed})`: {matrix.shape[0]:,} users x {matrix.shape[1]:,} items, "
        f"{matrix.nnz:,} interactions. Each user draws items from a few of {args.rank} topics, and each topic "
        f"favours popular items (a Zipf-Mandelbrot law), so recommending the most popular items is a real "
        f"baseline and there are preferences to learn. The last row ranks items by the generator's own "
        f"probabilities: the best a model can expect."
    )
    return matrix, None, (tastes, topics), "recore bench", described


def _bench_command(args) -> int:
    _check_bench(args)
    say = _messages(args)
    settings = _settings(args)
    threads = args.threads or recore.backends.get("cpu").default_threads()
    say(f"recore {recore.__version__} · CPU kernels: {recore.cpu_target()} · threads: {threads}")
    matrix, ratings, planted, title, described = _bench_data(args, say)
    train, test = evaluation.random_split(matrix, settings.test_fraction, random_state=settings.seed)
    rating_split = (train, test) if ratings is not None else None
    say(f"{train.nnz:,} training and {test.nnz:,} held-out interactions; one process per model:")
    start = time.perf_counter()
    study = _bench.run_study(
        train,
        test,
        settings,
        ratings=rating_split,
        planted=planted,
        say=say,
        progress=_interactive() and not args.quiet,
    )
    say(f"({time.perf_counter() - start:.1f} s)")
    report = _bench.markdown(study, title=title, description=described, memory_method=_bench.memory_method())
    if not args.quiet:
        print("\n" + report, flush=True)
    if args.report:
        with open(args.report, "w") as file:
            file.write(report)
        say(f"report written to {os.path.abspath(args.report)}")
    if args.chart:
        with open(args.chart, "w") as file:
            file.write(_bench.svg_chart(study.results, title=title, k=settings.k))
        say(f"chart written to {os.path.abspath(args.chart)}")
    return 0


# -- fit / recommend / evaluate ---------------------------------------------------------------------


def _ids_path(model_path: str) -> str:
    return os.path.splitext(model_path)[0] + ".ids.npz"


def _storable(ids: np.ndarray) -> np.ndarray:
    """Ids as numbers or strings: never objects, so that they load without pickle."""
    return ids if ids.dtype.kind in "iufU" else ids.astype(str)


def _fit_command(args) -> int:
    say = _messages(args)
    data, layout = _read(args.data, args, say)
    if args.model == "mf":
        if layout.value is None:
            raise ValueError(f"--model mf fits ratings, and {args.data} was read with no value column (pass --value)")
        matrix = data.matrix
    else:
        matrix = data.matrix.copy()
        if not (args.use_values and layout.value is not None):
            matrix.data[:] = 1.0  # which items each user has, as in recore bench
    model = _model(args)
    say(f"fitting {_describe_model(model)}")
    began = time.perf_counter()
    interactive = _interactive() and not args.quiet

    def report(iteration, metrics):
        if not interactive:  # a log gets a line per iteration; a terminal, the progress bar
            details = "".join(f", {name} {value:.6g}" for name, value in metrics.items() if name != "seconds")
            say(f"  iteration {iteration + 1}/{model.iterations}: {metrics['seconds']:.3f} s{details}")

    model.fit(matrix, callback=report, progress=interactive)
    say(f"fitted in {time.perf_counter() - began:.2f} s")
    model.save(args.out)
    # The ids beside the model: numbers or strings, never pickled objects.
    np.savez(_ids_path(args.out), user_ids=_storable(data.user_ids), item_ids=_storable(data.item_ids))
    say(f"model written to {args.out}, ids to {_ids_path(args.out)}")
    return 0


def _model(args):
    common = {"factors": args.factors, "num_threads": args.threads, "random_state": args.seed}
    if args.model == "als":
        return recore.ALS(iterations=args.iterations, regularization=args.regularization, alpha=args.alpha, **common)
    if args.model == "bpr":
        return recore.SGD(loss="bpr", iterations=args.iterations, learning_rate=0.05, regularization=0.0001, **common)
    return recore.SGD(loss="squared", iterations=args.iterations, **common)


def _describe_model(model) -> str:
    if isinstance(model, recore.ALS):
        return (
            f"ALS: factors={model.factors}, iterations={model.iterations}, "
            f"regularization={model.regularization:g}, alpha={model.alpha:g}"
        )
    return f"SGD ({model.loss}): factors={model.factors}, iterations={model.iterations}"


def _load_with_ids(path):
    model = recore.load(path)
    ids_path = _ids_path(path)
    if not os.path.exists(ids_path):
        raise FileNotFoundError(f"{ids_path}: the ids of {path}'s users and items are missing (recore fit writes both)")
    with np.load(ids_path, allow_pickle=False) as ids:
        return model, ids["user_ids"], ids["item_ids"]


def _in_model_ids(data: recore.Interactions, user_ids: np.ndarray, item_ids: np.ndarray) -> sp.csr_matrix:
    """``data``'s matrix re-indexed to the model's rows and columns by id; entries whose user or
    item the model does not know are dropped."""
    users = {str(value): index for index, value in enumerate(user_ids.tolist())}
    items = {str(value): index for index, value in enumerate(item_ids.tolist())}
    # One lookup per distinct id, then per entry by position.
    user_map = np.array([users.get(str(u), -1) for u in data.user_ids.tolist()], dtype=np.int64)
    item_map = np.array([items.get(str(i), -1) for i in data.item_ids.tolist()], dtype=np.int64)
    coo = data.matrix.tocoo()
    rows, cols = user_map[coo.row], item_map[coo.col]
    known = (rows >= 0) & (cols >= 0)
    return sp.csr_matrix(
        (coo.data[known].astype(np.float32), (rows[known], cols[known])), shape=(len(user_ids), len(item_ids))
    )


def _plain(value):
    """A numpy scalar as the Python number or string JSON writes."""
    return value.item() if isinstance(value, np.generic) else value


def _wanted_users(args, user_ids: np.ndarray) -> tuple[list, np.ndarray]:
    lookup = {str(value): index for index, value in enumerate(user_ids.tolist())}
    if args.users:
        wanted = [user.strip() for user in args.users.split(",") if user.strip()]
    elif args.users_file:
        with open(args.users_file) as file:
            wanted = [line.strip() for line in file if line.strip()]
    else:
        return user_ids.tolist(), np.arange(len(user_ids), dtype=np.int64)
    unknown = [user for user in wanted if user not in lookup]
    if unknown:
        raise IndexError(f"users: unknown id {unknown[0]!r}" + (f" and {len(unknown) - 1} more" if unknown[1:] else ""))
    rows = np.array([lookup[user] for user in wanted], dtype=np.int64)
    return [user_ids[row].item() for row in rows], rows


def _recommend_command(args) -> int:
    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    say = _messages(args)
    model, user_ids, item_ids = _load_with_ids(args.model_file)
    users, rows = _wanted_users(args, user_ids)
    seen = _in_model_ids(_read(args.data, args, say)[0], user_ids, item_ids) if args.data else None
    ids, scores = model.recommend(rows, seen, args.k, user_items_layout="full")
    out = sys.stdout
    if args.format == "tsv":
        out.write("user\trank\titem\tscore\n")
    for user, row, row_scores in zip(users, ids, scores):
        kept = [(item_ids[i].item(), float(s)) for i, s in zip(row, row_scores) if i >= 0]
        if args.format == "json":
            out.write(
                json.dumps(
                    {"user": _plain(user), "items": [i for i, _ in kept], "scores": [round(s, 6) for _, s in kept]}
                )
                + "\n"
            )
        else:
            out.writelines(f"{user}\t{rank}\t{item}\t{score:.6g}\n" for rank, (item, score) in enumerate(kept, 1))
    out.flush()
    return 0


def _evaluate_command(args) -> int:
    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    say = _messages(args)
    model, user_ids, item_ids = _load_with_ids(args.model_file)
    train = _in_model_ids(_read(args.train, args, say)[0], user_ids, item_ids)
    test = _in_model_ids(_read(args.test, args, say)[0], user_ids, item_ids)
    metrics = evaluation.ranking_metrics(model, train, test, k=args.k, num_threads=args.threads)
    if args.format == "json":
        print(json.dumps({"k": args.k, **{name: _plain(value) for name, value in metrics.items()}}))
    else:
        print("metric\tvalue")
        for name, value in metrics.items():
            print(f"users\t{value}" if name == "users" else f"{name}@{args.k}\t{value:.6g}")
    return 0


# -- info -------------------------------------------------------------------------------------------


def _info_command(args) -> int:
    import platform

    import scipy

    from recore.backends import cpu as _core

    lines = [
        ("recore", recore.__version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy / scipy", f"{np.__version__} / {scipy.__version__}"),
        (
            "CPU target",
            f"{recore.cpu_target()} (available: {', '.join(recore.available_cpu_targets())}; "
            f"RECORE_CPU_TARGET or recore.set_cpu_target to change)",
        ),
        (
            "threads",
            f"{_core.default_threads()} ({'OpenMP' if getattr(_core, 'openmp', True) else 'no OpenMP'}; "
            f"OMP_NUM_THREADS or --threads / num_threads to change)",
        ),
        ("CUDA engine", _cuda_line()),
        ("reading files", _version_of("pyarrow") or "pyarrow is not installed (pip install pyarrow)"),
        (
            "peers for recore bench",
            ", ".join(f"{m} {_version_of(m)}" for m in ("implicit", "faiss") if _version_of(m))
            or "none installed (pip install implicit faiss-cpu)",
        ),
    ]
    if args.format == "json":
        print(json.dumps(dict(lines)))
    else:
        width = max(len(name) for name, _ in lines)
        for name, value in lines:
            print(f"{name:<{width}}  {value}")
    return 0


def _cuda_line() -> str:
    reason = recore.cuda.unavailable_reason()
    return f"usable, {recore.cuda.device_count()} device(s)" if reason is None else f"not usable: {reason}"


def _version_of(module: str) -> str | None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return None
    try:
        return getattr(__import__(module), "__version__", "installed")
    except ImportError:
        return None


# -- the parser -------------------------------------------------------------------------------------


def _add_bench(commands) -> None:
    defaults = _bench.Settings()
    bench = commands.add_parser(
        "bench",
        help="cost-effectiveness study of recore's models (and peers) on built-in data or your file",
        description="Fits every model in a process of its own, lists the top-k items for every user and scores "
        "all lists with one evaluator against held-out interactions; writes a markdown report and an SVG chart "
        "of quality against fit time, top-k time and memory. ALS's regularization is chosen on a validation split "
        "of each run's training data; the other defaults by a small grid search on the built-in data with another "
        "seed (1).",
    )
    data = bench.add_argument_group("data (default: built-in synthetic data with planted preferences)")
    data.add_argument("--data", metavar="FILE", help="your file of interactions instead")
    data.add_argument(
        "--dataset", choices=sorted(MOVIELENS_SOURCES), help="a MovieLens data set instead (downloaded once)"
    )
    data.add_argument("--users", type=int, default=20_000, help="built-in data: users (default 20,000)")
    data.add_argument("--items", type=int, default=5_000, help="built-in data: items (default 5,000)")
    data.add_argument("--nnz", type=int, default=1_000_000, help="built-in data: interactions (default 1,000,000)")
    data.add_argument("--rank", type=int, default=16, help="built-in data: rank of the planted preferences")
    models = bench.add_argument_group("models")
    models.add_argument("--factors", type=int, default=defaults.factors, help="every model's (default %(default)s)")
    models.add_argument("--iterations", type=int, default=defaults.iterations, help="ALS (default %(default)s)")
    models.add_argument(
        "--regularization",
        type=float,
        default=None,
        help="ALS regularization (default: the best of 3, 10, 20, 50 and 100 on a validation split)",
    )
    models.add_argument(
        "--alpha", type=float, default=defaults.alpha, help="ALS confidence 1 + alpha (default %(default)s)"
    )
    models.add_argument("--cg-steps", type=int, default=defaults.cg_steps, help="ALS (default %(default)s)")
    models.add_argument("--bpr-iterations", type=int, default=defaults.bpr_iterations, help="(default %(default)s)")
    models.add_argument(
        "--bpr-learning-rate", type=float, default=defaults.bpr_learning_rate, help="(default %(default)s)"
    )
    models.add_argument(
        "--bpr-regularization", type=float, default=defaults.bpr_regularization, help="(default %(default)s)"
    )
    models.add_argument(
        "--mf-iterations",
        type=int,
        default=defaults.mf_iterations,
        help="biased MF, on rated data (default %(default)s)",
    )
    models.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rows for implicit and faiss when they are installed",
    )
    bench.add_argument("--k", type=int, default=defaults.k, help="list length (default 10)")
    bench.add_argument("--threads", type=int, default=0, help="threads per model; 0 uses every core")
    bench.add_argument("--seed", type=int, default=0, help="seeds the data, the split and the models")
    bench.add_argument("--report", default="recore-bench.md", help="markdown report ('' for none)")
    bench.add_argument("--chart", default="recore-bench.svg", help="SVG chart ('' for none)")
    bench.add_argument("--quiet", action="store_true", help="print nothing; write the report and chart only")
    _add_reading(bench)
    bench.set_defaults(run=_bench_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recore",
        description="Fast matrix-factorization recommenders. `recore bench` compares them; `fit`, `recommend` and "
        "`evaluate` work on your own files of interactions; `info` says what this installation runs on.",
    )
    parser.add_argument("--version", action="version", version=f"recore {recore.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_bench(commands)

    fit = commands.add_parser("fit", help="fit a model on a file of interactions")
    fit.add_argument("data", metavar="FILE")
    fit.add_argument(
        "--model",
        choices=("als", "bpr", "mf"),
        default="als",
        help="als (implicit ALS), bpr (SGD, BPR) or mf (SGD, biased MF on the value column as ratings)",
    )
    fit.add_argument("--factors", type=int, default=64)
    fit.add_argument("--iterations", type=int, default=15, help="ALS iterations or SGD epochs")
    fit.add_argument("--regularization", type=float, default=0.05, help="ALS regularization")
    fit.add_argument("--alpha", type=float, default=1.0, help="ALS confidence 1 + alpha * value")
    fit.add_argument(
        "--use-values",
        action="store_true",
        help="ALS: the value column as confidence (default: each user-item pair counts 1)",
    )
    fit.add_argument("--threads", type=int, default=0, help="0 uses every core")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", default="model.npz", help="model file (the ids go beside it, in .ids.npz)")
    fit.add_argument("--quiet", action="store_true", help="no messages on stderr")
    _add_reading(fit)
    fit.set_defaults(run=_fit_command)

    recommend = commands.add_parser(
        "recommend", help="top-k items for users of a fitted model (TSV: user, rank, item, score)"
    )
    recommend.add_argument("model_file", metavar="MODEL")
    recommend.add_argument("--data", metavar="FILE", help="interactions whose items each user has seen (left out)")
    recommend.add_argument("--users", help="comma-separated user ids (default: every user)")
    recommend.add_argument("--users-file", metavar="FILE", help="user ids, one a line")
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument(
        "--format",
        choices=("tsv", "json"),
        default="tsv",
        help="tsv: a header, then one line per item; json: one object per user and line",
    )
    recommend.add_argument("--quiet", action="store_true", help="no messages on stderr")
    _add_reading(recommend)
    recommend.set_defaults(run=_recommend_command)

    evaluate = commands.add_parser("evaluate", help="ranking metrics of a fitted model on held-out interactions")
    evaluate.add_argument("model_file", metavar="MODEL")
    evaluate.add_argument("train", metavar="TRAIN", help="training interactions (left out of the lists)")
    evaluate.add_argument("test", metavar="TEST", help="held-out interactions (relevant items)")
    evaluate.add_argument("--k", type=int, default=10)
    evaluate.add_argument("--threads", type=int, default=0)
    evaluate.add_argument("--format", choices=("tsv", "json"), default="tsv")
    evaluate.add_argument("--quiet", action="store_true", help="no messages on stderr")
    _add_reading(evaluate)
    evaluate.set_defaults(run=_evaluate_command)

    info = commands.add_parser("info", help="version, CPU target, threads, CUDA and optional packages")
    info.add_argument("--format", choices=("text", "json"), default="text")
    info.set_defaults(run=_info_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader of a pipe stopped early (`recore recommend ... | head`): not an error of ours.
        # Python would report the failed flush of stdout at exit, so stdout goes nowhere first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (TypeError, ValueError, IndexError, KeyError, OSError, RuntimeError, ImportError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"recore: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
