"""Plain-Python references of recore.SGD's update rules (see cpp/include/recore/sgd.hpp),
one rating or triple at a time in float64, for the tests."""

from __future__ import annotations

import numpy as np


def round_robin_runs(length, runs):
    """The order recore visits one block of ``length`` ratings in: cut into ``runs`` runs of
    ceil(length / runs) consecutive ratings, taken one rating of each run in turn."""
    run_length = max(-(-length // runs), 1)
    pieces = [list(range(start, min(start + run_length, length))) for start in range(0, length, run_length)]
    order = []
    for step in range(run_length):
        order.extend(piece[step] for piece in pieces if step < len(piece))
    return np.array(order, dtype=np.int64)


def ratings_by_block(matrix, user_rank, item_rank, blocks):
    """The grid's ratings as ranks, sorted by block, then user rank, then item rank (three
    sort keys), and the block starts."""
    coo = matrix.tocoo()
    users, items = user_rank[coo.row], item_rank[coo.col]
    n_users, n_items = matrix.shape
    block = (users.astype(np.int64) * blocks // n_users) * blocks + items.astype(np.int64) * blocks // n_items
    order = np.lexsort((items, users, block))
    starts = np.concatenate([[0], np.cumsum(np.bincount(block, minlength=blocks * blocks))])
    return users[order], items[order], coo.data[order], starts


def squared_epoch(
    users, items, values, p, q, bu, bi, mu, gu, gi, *, eta, lam, lam_b, biases, adaptive, slow=0, slow_only=False
):
    """Updates p, q (n x f float64), biases and rate sums in place, in the given order. With
    ``slow`` > 0 the rate sums are (n, 2): dimensions [0, slow) and [slow, f) apart."""
    f = p.shape[1]
    parts = [(0, slow), (slow, f)] if slow else [(0, f)]
    for u, i, r in zip(users, items, values):
        e = r - (mu + (bu[u] + bi[i] if biases else 0.0) + p[u] @ q[i])
        old_p, old_q = p[u].copy(), q[i].copy()
        for part, (a, b) in enumerate(parts):
            if part == 1 and slow_only:
                break
            eta_u = eta / np.sqrt(gu[u][part] if slow else gu[u]) if adaptive else eta
            eta_i = eta / np.sqrt(gi[i][part] if slow else gi[i]) if adaptive else eta
            grad_p = lam * old_p[a:b] - e * old_q[a:b]
            grad_q = lam * old_q[a:b] - e * old_p[a:b]
            p[u, a:b] -= eta_u * grad_p
            q[i, a:b] -= eta_i * grad_q
            if part == 0 and biases:
                bu[u] -= eta_u * (lam_b * bu[u] - e)
                bi[i] -= eta_i * (lam_b * bi[i] - e)
            if adaptive and slow:
                gu[u][part] += grad_p @ grad_p / (b - a)
                gi[i][part] += grad_q @ grad_q / (b - a)
            elif adaptive:
                gu[u] += grad_p @ grad_p / f
                gi[i] += grad_q @ grad_q / f


def bpr_triples(users, positives, negatives, p, q, b, gu, gi, *, eta, lam, lam_b, biases, adaptive):
    f = p.shape[1]
    correct = 0
    for u, i, j in zip(users, positives, negatives):
        x = p[u] @ (q[i] - q[j]) + (b[i] - b[j] if biases else 0.0)
        correct += x > 0
        d = 1.0 / (1.0 + np.exp(x))
        eta_u = eta / np.sqrt(gu[u]) if adaptive else eta
        eta_i = eta / np.sqrt(gi[i]) if adaptive else eta
        eta_j = eta / np.sqrt(gi[j]) if adaptive else eta
        grad_p = lam * p[u] - d * (q[i] - q[j])
        grad_i = lam * q[i] - d * p[u]
        grad_j = lam * q[j] + d * p[u]
        p[u] -= eta_u * grad_p
        q[i] -= eta_i * grad_i
        q[j] -= eta_j * grad_j
        if biases:
            b[i] -= eta_i * (lam_b * b[i] - d)
            b[j] -= eta_j * (lam_b * b[j] + d)
        if adaptive:
            gu[u] += grad_p @ grad_p / f
            gi[i] += grad_i @ grad_i / f
            gi[j] += grad_j @ grad_j / f
    return correct
