"""The ``recore`` command.

``recore bench`` is recore's main job: it generates a synthetic power-law interaction
matrix, trains ALS on it and prints the time and training loss of every iteration.
"""

from __future__ import annotations

import argparse
import sys
import time

import recore


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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recore", description="Fast matrix-factorization recommenders.")
    parser.add_argument("--version", action="version", version=f"recore {recore.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("bench", help="train ALS on built-in synthetic data and report speed and loss")
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
