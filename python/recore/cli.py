"""The ``recore`` command.

``recore bench`` is recore's main job: on built-in synthetic data (or ``--dataset ml-100k``
etc.) it trains ALS, printing the time and training loss of every iteration, then trains ALS,
BPR and biased-MF models on a held-out split, recommends top-10 for every user and writes a
cost-effectiveness report: quality (NDCG@10, precision@10, RMSE where it applies) against fit
time, recommend time and peak memory, as a markdown table and, with matplotlib, a PNG chart.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.sparse as sp

import recore
from recore import evaluation


def _bench(args: argparse.Namespace) -> int:
    say = (lambda *a, **k: None) if args.quiet else print
    say(f"recore {recore.__version__} · CPU kernels: {recore.cpu_target()}")
    start = time.perf_counter()
    user_items = recore.datasets.synthetic(args.users, args.items, args.nnz, random_state=args.seed)
    say(
        f"synthetic data: {user_items.shape[0]:,} users x {user_items.shape[1]:,} items, "
        f"{user_items.nnz:,} interactions ({time.perf_counter() - start:.1f} s)"
    )
    model = recore.ALS(
        factors=args.factors,
        regularization=args.regularization,
        alpha=args.alpha,
        iterations=args.iterations,
        solver=args.solver,
        cg_steps=args.cg_steps,
        num_threads=args.threads,
        random_state=args.seed,
        calculate_training_loss=True,
    )
    say(
        f"ALS: factors={args.factors} solver={args.solver} regularization={args.regularization} "
        f"alpha={args.alpha} threads={args.threads or 'all'}"
    )
    say(f"{'iteration':>9}  {'seconds':>8}  {'training loss':>16}")
    times = []

    def report(iteration, metrics):
        times.append(metrics["seconds"])
        say(f"{iteration + 1:>9}  {metrics['seconds']:>8.3f}  {metrics['loss']:>16.6g}")

    model.fit(user_items, callback=report)
    if times:
        say(f"mean {sum(times) / len(times):.3f} s per iteration, final loss {model.history_['loss'][-1]:.6g}")
    if args.report_only_als:
        return 0
    rows = _cost_effectiveness(args, user_items, say)
    table = _markdown(rows)
    say("\n" + table)
    if args.report:
        with open(args.report, "w") as file:
            file.write(table + "\n")
        say(f"report written to {args.report}")
    if args.chart:
        _chart(rows, args.chart, say)
    return 0


class _PeakMemory:
    """The process's peak resident memory during a block, in MiB (Linux: the peak is reset at
    the start; elsewhere the lifetime peak). Memory the process already held and reuses
    counts, so the figure includes the data and everything else alive."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as file:
                file.write("5")
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        self.mib = self._peak() / 2**20

    @staticmethod
    def _peak() -> float:
        try:
            with open("/proc/self/status") as file:
                return next(float(line.split()[1]) * 1024 for line in file if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            import resource

            return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _cost_effectiveness(args, interactions, say) -> list[dict]:
    """Fits each model on a training split and measures quality, time and memory."""
    if args.dataset:
        data = recore.datasets.movielens(args.dataset)
        ratings = data.ratings
        positives = ratings.copy()
        positives.data = (positives.data >= 4).astype(np.float32)
        positives.eliminate_zeros()
    else:
        ratings = recore.datasets.synthetic_ratings(args.users, args.items, args.nnz, random_state=args.seed)
        positives = interactions
    train, test = evaluation.random_split(positives, 0.2, random_state=args.seed)
    rating_train, rating_test = evaluation.random_split(ratings, 0.2, random_state=args.seed)
    threads = args.threads
    common = dict(factors=args.factors, num_threads=threads, random_state=args.seed)
    als = dict(iterations=args.iterations, regularization=args.regularization, alpha=args.alpha, **common)
    candidates = [
        ("ALS, CG", lambda: recore.ALS(**als), "ranking"),
        ("ALS, Cholesky", lambda: recore.ALS(solver="cholesky", **als), "ranking"),
        ("BPR (SGD)", lambda: recore.SGD(loss="bpr", iterations=30, learning_rate=0.05, regularization=0.01, **common),
         "ranking"),
        ("biased MF (SGD)", lambda: recore.SGD(**common), "rating"),
    ]  # fmt: skip
    rows = []
    from tqdm.auto import tqdm

    for name, make, kind in tqdm(candidates, desc="models", disable=args.quiet):
        fit_data, eval_train, eval_test = (
            (train, train, test) if kind == "ranking" else (rating_train, rating_train, rating_test)
        )
        model = make()
        with _PeakMemory() as memory:
            began = time.perf_counter()
            model.fit(fit_data)
            fit_seconds = time.perf_counter() - began
        began = time.perf_counter()
        ids, _ = model.recommend_all(eval_train, k=10)
        recommend_seconds = time.perf_counter() - began
        relevant = eval_test if kind == "ranking" else _liked(eval_test)
        metrics = evaluation.ranking_metrics_at_k(ids, relevant, train=eval_train)
        row = {
            "model": name,
            "ndcg": metrics["ndcg"],
            "precision": metrics["precision"],
            "rmse": evaluation.rating_metrics(model, eval_test)["rmse"] if kind == "rating" else None,
            "fit_seconds": fit_seconds,
            "recommend_seconds": recommend_seconds,
            "peak_mib": memory.mib,
        }
        rows.append(row)
        say(f"  {name}: NDCG@10 {row['ndcg']:.4f}, fit {fit_seconds:.2f} s, recommend {recommend_seconds:.2f} s")
    return rows


def _liked(ratings):
    """Ratings of 4 and more, as relevant items."""
    liked = ratings.copy()
    liked.data = (liked.data >= 4).astype(np.float32)
    liked.eliminate_zeros()
    return liked


def _markdown(rows) -> str:
    lines = [
        "| model | NDCG@10 | precision@10 | RMSE | fit s | top-10 for all users s | process peak memory MiB |",
        "|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rmse = f"{r['rmse']:.4f}" if r["rmse"] is not None else "—"
        lines.append(
            f"| {r['model']} | {r['ndcg']:.4f} | {r['precision']:.4f} | {rmse} | {r['fit_seconds']:.2f} | "
            f"{r['recommend_seconds']:.2f} | {r['peak_mib']:.0f} |"
        )
    lines.append("")
    lines.append(
        "NDCG@10 and precision@10 on a 20% held-out split (training items excluded; for biased MF, ratings >= 4 "
        "are relevant). RMSE on held-out ratings. Process peak memory: the process's peak resident size during "
        "the fit (data and everything else alive included)."
    )
    return "\n".join(lines)


def _chart(rows, path, say) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no chart (pip install matplotlib)")
        return
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        axes[0].scatter(r["fit_seconds"], r["ndcg"])
        axes[0].annotate(r["model"], (r["fit_seconds"], r["ndcg"]))
        axes[1].scatter(r["peak_mib"], r["ndcg"])
        axes[1].annotate(r["model"], (r["peak_mib"], r["ndcg"]))
    axes[0].set_xlabel("fit seconds")
    axes[1].set_xlabel("process peak memory during fit, MiB")
    for axis in axes:
        axis.set_ylabel("NDCG@10")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    say(f"chart written to {os.path.abspath(path)}")


# -- fit / recommend / evaluate on your own data ------------------------------------------------


def _read_interactions(path, args) -> recore.Interactions:
    loader = recore.Interactions.from_parquet if str(path).endswith(".parquet") else recore.Interactions.from_csv
    options = {} if str(path).endswith(".parquet") else {"sep": "\t" if str(path).endswith((".tsv", ".tab")) else ","}
    return loader(path, user=args.user, item=args.item, value=args.value, **options)


def _ids_path(model_path: str) -> str:
    return os.path.splitext(model_path)[0] + ".ids.npz"


def _fit(args: argparse.Namespace) -> int:
    say = (lambda *a, **k: None) if args.quiet else print
    data = _read_interactions(args.data, args)
    say(f"{data.shape[0]:,} users x {data.shape[1]:,} items, {data.matrix.nnz:,} interactions")
    model: recore.ALS | recore.SGD
    if args.model == "als":
        model = recore.ALS(factors=args.factors, iterations=args.iterations, num_threads=args.threads,
                           random_state=args.seed)  # fmt: skip
    else:
        model = recore.SGD(loss="bpr" if args.model == "bpr" else "squared", factors=args.factors,
                           num_threads=args.threads, random_state=args.seed)  # fmt: skip
    began = time.perf_counter()
    model.fit(data.matrix, progress=not args.quiet)
    say(f"fitted {type(model).__name__} in {time.perf_counter() - began:.2f} s")
    model.save(args.out)
    # The ids beside the model: numbers or strings, never pickled objects.
    np.savez(_ids_path(args.out), user_ids=data.user_ids.astype(str), item_ids=data.item_ids.astype(str))
    say(f"model written to {args.out}, ids to {_ids_path(args.out)}")
    return 0


def _load_with_ids(path):
    model = recore.load(path)
    with np.load(_ids_path(path), allow_pickle=False) as ids:
        return model, ids["user_ids"], ids["item_ids"]


def _in_model_ids(data: recore.Interactions, user_ids: np.ndarray, item_ids: np.ndarray) -> sp.csr_matrix:
    """``data``'s matrix re-indexed to the model's rows and columns by id; entries whose user or
    item the model does not know are dropped."""
    users = {value: index for index, value in enumerate(user_ids.tolist())}
    items = {value: index for index, value in enumerate(item_ids.tolist())}
    # One lookup per distinct id, then per entry by position.
    user_map = np.array([users.get(str(u), -1) for u in data.user_ids], dtype=np.int64)
    item_map = np.array([items.get(str(i), -1) for i in data.item_ids], dtype=np.int64)
    coo = data.matrix.tocoo()
    rows, cols = user_map[coo.row], item_map[coo.col]
    known = (rows >= 0) & (cols >= 0)
    return sp.csr_matrix(
        (coo.data[known].astype(np.float32), (rows[known], cols[known])), shape=(len(user_ids), len(item_ids))
    )


def _recommend(args: argparse.Namespace) -> int:
    model, user_ids, item_ids = _load_with_ids(args.model_file)
    lookup = {value: index for index, value in enumerate(user_ids.tolist())}
    wanted = args.users.split(",") if args.users else user_ids.tolist()
    try:
        rows = np.array([lookup[user] for user in wanted], dtype=np.int64)
    except KeyError as missing:
        raise IndexError(f"users: unknown id {missing.args[0]!r}") from None
    seen = _in_model_ids(_read_interactions(args.data, args), user_ids, item_ids) if args.data else None
    ids, scores = model.recommend(rows, seen, args.k)
    for user, row, row_scores in zip(wanted, ids, scores):
        items = [f"{item_ids[i]}:{s:.4g}" for i, s in zip(row, row_scores) if i >= 0]
        print(f"{user}\t" + " ".join(items))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    model, user_ids, item_ids = _load_with_ids(args.model_file)
    train = _in_model_ids(_read_interactions(args.train, args), user_ids, item_ids)
    test = _in_model_ids(_read_interactions(args.test, args), user_ids, item_ids)
    metrics = evaluation.ranking_metrics(model, train, test, k=args.k)
    for name, value in metrics.items():
        print(f"{name}@{args.k}\t{value:.6g}" if name != "users" else f"users\t{value}")
    return 0


def _add_columns(parser) -> None:
    parser.add_argument("--user", default="user", help="user id column")
    parser.add_argument("--item", default="item", help="item id column")
    parser.add_argument("--value", default=None, help="value column (default: every record counts 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recore", description="Fast matrix-factorization recommenders.")
    parser.add_argument("--version", action="version", version=f"recore {recore.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser(
        "bench", help="train models on built-in synthetic data and write a cost-effectiveness report"
    )
    bench.add_argument("--users", type=int, default=50_000)
    bench.add_argument("--items", type=int, default=10_000)
    bench.add_argument("--nnz", type=int, default=2_000_000, help="interactions to generate")
    bench.add_argument("--factors", type=int, default=64)
    bench.add_argument("--iterations", type=int, default=10)
    bench.add_argument("--regularization", type=float, default=0.05)
    bench.add_argument("--alpha", type=float, default=1.0)
    bench.add_argument("--solver", choices=("cg", "cholesky"), default="cg")
    bench.add_argument("--cg-steps", type=int, default=3)
    bench.add_argument("--threads", type=int, default=0, help="0 uses every core")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--quiet", action="store_true", help="print nothing")
    bench.add_argument(
        "--dataset",
        choices=sorted(recore.datasets.movielens.__globals__["SOURCES"]),
        help="MovieLens instead of synthetic data for the report (downloaded once)",
    )
    bench.add_argument("--report", default="recore-bench.md", help="markdown report path ('' for none)")
    bench.add_argument("--chart", default="recore-bench.png", help="PNG chart path, with matplotlib ('' for none)")
    bench.add_argument("--report-only-als", action="store_true", help=argparse.SUPPRESS)
    bench.set_defaults(run=_bench)

    fit = commands.add_parser("fit", help="fit a model on a CSV, TSV or Parquet file of interactions")
    fit.add_argument("data")
    fit.add_argument("--model", choices=("als", "sgd", "bpr"), default="als")
    fit.add_argument("--factors", type=int, default=64)
    fit.add_argument("--iterations", type=int, default=15)
    fit.add_argument("--threads", type=int, default=0)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", default="model.npz")
    fit.add_argument("--quiet", action="store_true")
    _add_columns(fit)
    fit.set_defaults(run=_fit)

    recommend = commands.add_parser("recommend", help="top-k items for users of a fitted model")
    recommend.add_argument("model_file")
    recommend.add_argument("--data", help="interactions whose items each user has seen (excluded)")
    recommend.add_argument("--users", help="comma-separated user ids (default: every user)")
    recommend.add_argument("--k", type=int, default=10)
    _add_columns(recommend)
    recommend.set_defaults(run=_recommend)

    evaluate = commands.add_parser("evaluate", help="ranking metrics of a fitted model on held-out interactions")
    evaluate.add_argument("model_file")
    evaluate.add_argument("train")
    evaluate.add_argument("test")
    evaluate.add_argument("--k", type=int, default=10)
    _add_columns(evaluate)
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (TypeError, ValueError, IndexError, KeyError, OSError) as error:
        print(f"recore: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
