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

    def report(iteration, elapsed, loss):
        times.append(elapsed)
        say(f"{iteration + 1:>9}  {elapsed:>8.3f}  {loss:>16.6g}")

    model.fit(user_items, callback=report)
    if times:
        say(f"mean {sum(times) / len(times):.3f} s per iteration, final loss {model.loss_history_[-1]:.6g}")
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
    """Peak resident memory growth of a block, in MiB (Linux: the peak is reset first;
    elsewhere the growth of the process's lifetime peak, a lower bound)."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as file:
                file.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.before = self._resident() if self.reset else self._peak()
        return self

    def __exit__(self, *exc):
        self.mib = max(0.0, (self._peak() - self.before) / 2**20)

    @staticmethod
    def _resident() -> float:
        with open("/proc/self/status") as file:
            return next(float(line.split()[1]) * 1024 for line in file if line.startswith("VmRSS:"))

    @staticmethod
    def _peak() -> float:
        try:
            with open("/proc/self/status") as file:
                return next(float(line.split()[1]) * 1024 for line in file if line.startswith("VmHWM:"))
        except OSError:
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
        ("BPR (SGD)", lambda: recore.SGD(loss="bpr", epochs=30, learning_rate=0.05, regularization=0.01, **common),
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
        "| model | NDCG@10 | precision@10 | RMSE | fit s | top-10 for all users s | peak memory MiB |",
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
        "are relevant). RMSE on held-out ratings. Peak memory: resident growth during fit."
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
    axes[1].set_xlabel("peak memory during fit, MiB")
    for axis in axes:
        axis.set_ylabel("NDCG@10")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    say(f"chart written to {os.path.abspath(path)}")


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (TypeError, ValueError, IndexError) as error:
        print(f"recore: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
