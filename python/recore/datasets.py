"""Built-in data: synthetic interaction matrices shaped like real recommendation logs.

Nothing here downloads anything; every matrix is generated from a seed.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recore._validation import check_float, check_int, check_random_state

__all__ = ["synthetic"]

#: The shape of MovieLens-20M (users, items, interactions), for benchmarks.
MOVIELENS_20M_SHAPE = (138_493, 26_744, 20_000_263)


# Ids are int32 in the matrices synthetic() returns.
_MAX_DIMENSION = 2**31 - 1
# The planted factors ((n_users + n_items) x rank values) are made whole: at most this many
# (8 GiB of float32, 16 of float64), refused before any work rather than failing to allocate.
_MAX_PLANTED_VALUES = 2**31


def _check_rank(rank, n_users: int, n_items: int) -> int:
    """``rank`` >= 1, small enough that the planted factors of ``n_users`` and ``n_items``
    rows (sizes already checked) can be made."""
    rank = check_int(rank, "rank", 1)
    if rank * (n_users + n_items) > _MAX_PLANTED_VALUES:
        raise ValueError(
            f"rank={rank} needs (n_users + n_items) * rank = {rank * (n_users + n_items)} planted values, "
            f"more than {_MAX_PLANTED_VALUES}"
        )
    return rank


def synthetic(
    n_users: int = 10_000,
    n_items: int = 2_000,
    nnz: int = 500_000,
    *,
    popularity_exponent: float = 1.0,
    popularity_offset: float = 20.0,
    activity_sigma: float = 1.0,
    random_state=0,
) -> sp.csr_matrix:
    """Power-law implicit interactions: a users x items CSR matrix of interaction counts.

    Item popularity follows a Zipf-Mandelbrot law: the item of popularity rank r is drawn
    with probability proportional to ``(r + popularity_offset) ** -popularity_exponent``
    (ranks are shuffled over item ids). User activity is lognormal with shape
    ``activity_sigma``. The MovieLens-20M shape (138,000 x 27,000 x 17M) takes a few
    seconds. Each user's draws are made with replacement; repeated draws of an
    item add up, so values are counts >= 1 (float32). The number of stored entries is
    close to ``nnz`` (a little lower where popular items saturate).

    Parameters
    ----------
    n_users, n_items : int >= 1
        The matrix's shape, each at most 2**31 - 1.
    nnz : int >= 0
        Target number of stored entries, at most ``n_users * n_items``.
    popularity_exponent : float >= 0, default 1.0
        Exponent of the Zipf-Mandelbrot law; 0 makes every item equally popular.
    popularity_offset : float >= 0, default 20.0
        Offset of the law, which flattens the head of the popularity curve.
    activity_sigma : float >= 0, default 1.0
        Shape of the lognormal user activity; 0 gives every user the same expected count.
    random_state : None, int or numpy.random.Generator, default 0
        The same seed always gives the same matrix.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n_users, n_items)`` float32 counts, canonical (sorted indices, no duplicates),
        int32 indices (int64 for 2**31 entries or more).

    Raises
    ------
    ValueError
        A size or parameter out of range, or ``nnz`` larger than the matrix.
    """
    n_users = check_int(n_users, "n_users", 1)
    n_items = check_int(n_items, "n_items", 1)
    nnz = check_int(nnz, "nnz", 0)
    popularity_exponent = check_float(popularity_exponent, "popularity_exponent", 0.0)
    popularity_offset = check_float(popularity_offset, "popularity_offset", 0.0)
    activity_sigma = check_float(activity_sigma, "activity_sigma", 0.0)
    for name, value in (("n_users", n_users), ("n_items", n_items)):
        if value > _MAX_DIMENSION:
            raise ValueError(f"{name} must be at most {_MAX_DIMENSION}, got {value}")
    if nnz > n_users * n_items:
        raise ValueError(f"nnz={nnz} exceeds n_users * n_items = {n_users * n_items}")
    rng = check_random_state(random_state)

    ranks = rng.permutation(n_items)
    popularity = (ranks + 1.0 + popularity_offset) ** -popularity_exponent
    item_sampler = _AliasTable(popularity / popularity.sum())
    activity = rng.lognormal(0.0, activity_sigma, size=n_users)
    activity /= activity.sum()

    keys = np.empty(0, dtype=np.int64)
    counts = np.empty(0, dtype=np.int64)
    draws = nnz
    # Repeated draws of a pair merge into one entry; draw again for the shortfall.
    for _ in range(8):
        if draws <= 0:
            break
        # Users by a multinomial split of the draws (sorted, no search), items from an alias
        # table (constant time per draw).
        users = np.repeat(np.arange(n_users, dtype=np.int64), rng.multinomial(draws, activity))
        items = item_sampler.sample(rng, draws)
        new_keys = users * n_items + items
        new_keys.sort()
        merged_keys = np.concatenate([keys, new_keys])
        merged_counts = np.concatenate([counts, np.ones(draws, dtype=np.int64)])
        # Two sorted runs: the stable sort merges them in linear time.
        order = np.argsort(merged_keys, kind="stable")
        keys, counts = _sum_runs(merged_keys[order], merged_counts[order])
        draws = int((nnz - keys.size) * 1.25) + 1 if keys.size < nnz * 0.995 else 0
    if keys.size > nnz:
        keep = np.sort(rng.choice(keys.size, size=nnz, replace=False))
        keys, counts = keys[keep], counts[keep]

    rows = (keys // n_items).astype(np.int32)
    cols = (keys % n_items).astype(np.int32)
    indptr = np.zeros(n_users + 1, dtype=np.int32 if keys.size < 2**31 else np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    return sp.csr_matrix((counts.astype(np.float32), cols.astype(indptr.dtype), indptr), shape=(n_users, n_items))


class _AliasTable:
    """Walker's alias method: draws from a discrete distribution in constant time each."""

    def __init__(self, probabilities: np.ndarray):
        n = len(probabilities)
        scaled = np.asarray(probabilities, dtype=np.float64) * n
        self.accept = np.ones(n)
        self.alias = np.arange(n)
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            low, high = small.pop(), large.pop()
            self.accept[low] = scaled[low]
            self.alias[low] = high
            scaled[high] -= 1.0 - scaled[low]
            (small if scaled[high] < 1.0 else large).append(high)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        column = rng.integers(0, len(self.accept), size=size)
        keep = rng.random(size) < self.accept[column]
        return np.where(keep, column, self.alias[column])


def _sum_runs(sorted_keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys of a sorted array and the sum of the counts of each."""
    if sorted_keys.size == 0:
        return sorted_keys, counts
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    return sorted_keys[starts], np.add.reduceat(counts, starts)


def synthetic_ratings(
    n_users: int = 10_000,
    n_items: int = 2_000,
    nnz: int = 500_000,
    *,
    rank: int = 16,
    noise: float = 0.5,
    random_state=0,
) -> sp.csr_matrix:
    """Explicit ratings 1..5 from a planted low-rank model.

    The stored entries are those of :func:`synthetic` with the same sizes and seed (the
    power-law pattern). Rating = clip(round(3.5 + b_u + b_i + p_u . q_i + noise), 1, 5)
    with user and item biases ~ N(0, 0.3^2), p_u, q_i ~ N(0, 1/rank) in ``rank``
    dimensions scaled so that the dot products have standard deviation 0.8, and Gaussian
    noise of standard deviation ``noise``.

    Parameters
    ----------
    n_users, n_items : int >= 1
        The matrix's shape.
    nnz : int >= 0
        Target number of ratings (see :func:`synthetic`).
    rank : int >= 1, default 16
        Dimensions of the planted model.
    noise : float >= 0, default 0.5
        Standard deviation of the noise added before rounding.
    random_state : None, int or numpy.random.Generator, default 0
        The same seed always gives the same ratings.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n_users, n_items)`` float32 ratings (values 1.0 .. 5.0), canonical.

    Raises
    ------
    ValueError
        A size or parameter out of range.
    """
    # The sizes as synthetic() checks them, first, so that the rank is checked against them.
    rank = _check_rank(rank, check_int(n_users, "n_users", 1), check_int(n_items, "n_items", 1))
    noise = check_float(noise, "noise", 0.0)
    pattern = synthetic(n_users, n_items, nnz, random_state=random_state)
    rng = check_random_state(random_state)
    rng = np.random.default_rng(rng.integers(0, 2**63))  # independent of the pattern's draws
    users = rng.standard_normal((pattern.shape[0], rank), dtype=np.float32) / np.float32(np.sqrt(rank))
    items = rng.standard_normal((pattern.shape[1], rank), dtype=np.float32) * np.float32(0.8)
    user_bias = rng.normal(0.0, 0.3, pattern.shape[0]).astype(np.float32)
    item_bias = rng.normal(0.0, 0.3, pattern.shape[1]).astype(np.float32)
    rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))
    cols = pattern.indices
    values = np.empty(pattern.nnz, dtype=np.float32)
    chunk = 1 << 20  # bounded temporary memory
    for first in range(0, pattern.nnz, chunk):
        r, c = rows[first : first + chunk], cols[first : first + chunk]
        score = 3.5 + user_bias[r] + item_bias[c] + np.einsum("ij,ij->i", users[r], items[c])
        score += rng.normal(0.0, noise, len(r)).astype(np.float32)
        values[first : first + chunk] = np.clip(np.rint(score), 1, 5)
    ratings = pattern.copy()
    ratings.data = values
    return ratings


def synthetic_preferences(
    n_users: int = 20_000,
    n_items: int = 5_000,
    nnz: int = 1_000_000,
    *,
    rank: int = 16,
    taste_concentration: float = 0.1,
    item_concentration: float = 0.1,
    popularity_exponent: float = 1.0,
    popularity_offset: float = 20.0,
    activity_sigma: float = 1.0,
    random_state=0,
    return_model: bool = False,
):
    """Implicit interactions with planted low-rank preferences and popularity skew.

    Unlike :func:`synthetic`, whose users all draw from one popularity law (so that nothing
    beats recommending the most popular items), here users differ in taste. There are
    ``rank`` topics. User u has tastes theta_u ~ Dirichlet(``taste_concentration``) over
    the topics (a small concentration: a few favourite topics each). Item i has a
    popularity w_i, Zipf-Mandelbrot as in :func:`synthetic` (the item of popularity rank r
    weighs ``(r + popularity_offset) ** -popularity_exponent``, ranks shuffled over ids),
    and affinities a_i ~ Dirichlet(``item_concentration``) over the topics. Topic k picks
    item i with probability phi_k(i) = w_i a_ik / sum_j w_j a_jk, and each interaction of
    u is a topic drawn from theta_u, then an item drawn from that topic. So u picks i with
    probability P(i | u) = sum_k theta_uk phi_k(i): a rank-``rank`` matrix (the planted
    preferences) whose popular items are picked most. Users' numbers of draws are
    lognormal (``activity_sigma``) as in :func:`synthetic`; repeated draws of an item add
    up, so values are counts >= 1, and draws go on until about ``nnz`` distinct pairs are
    stored.

    A model that learns the preferences ranks a user's held-out items well above the most
    popular items; ranking by P(i | u) itself (``return_model=True``) is the best any
    model can expect to do.

    Parameters
    ----------
    n_users, n_items : int >= 1
        The matrix's shape, each at most 2**31 - 1.
    nnz : int >= 0
        Target number of stored entries, at most ``n_users * n_items`` (the result holds
        a little fewer where popular items saturate).
    rank : int >= 1, default 16
        Topics: the rank of the planted preferences.
    taste_concentration : float > 0, default 0.1
        Dirichlet concentration of each user's tastes; smaller: fewer topics per user.
    item_concentration : float > 0, default 0.1
        Dirichlet concentration of each item's topic affinities; smaller: fewer topics per
        item.
    popularity_exponent : float >= 0, default 1.0
        Exponent of the popularity law; 0 gives no popularity skew.
    popularity_offset : float >= 0, default 20.0
        Offset of the popularity law, which flattens its head.
    activity_sigma : float >= 0, default 1.0
        Shape of the lognormal user activity.
    random_state : None, int or numpy.random.Generator, default 0
        The same seed always gives the same matrix (and model).
    return_model : bool, default False
        Also return the planted model.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n_users, n_items)`` float32 counts, canonical (sorted indices, no duplicates).
    tastes : float32 ndarray (n_users, rank)
        Only with ``return_model``: theta, each row summing to 1.
    topics : float32 ndarray (n_items, rank)
        Only with ``return_model``: phi transposed, each column summing to 1, so that
        ``tastes @ topics.T`` is P(i | u).

    Raises
    ------
    ValueError
        A size or parameter out of range, or ``nnz`` larger than the matrix.
    """
    n_users = check_int(n_users, "n_users", 1)
    n_items = check_int(n_items, "n_items", 1)
    nnz = check_int(nnz, "nnz", 0)
    rank = _check_rank(rank, n_users, n_items)
    concentrations = {"taste_concentration": taste_concentration, "item_concentration": item_concentration}
    for name, value in concentrations.items():
        if check_float(value, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    popularity_exponent = check_float(popularity_exponent, "popularity_exponent", 0.0)
    popularity_offset = check_float(popularity_offset, "popularity_offset", 0.0)
    activity_sigma = check_float(activity_sigma, "activity_sigma", 0.0)
    if not isinstance(return_model, (bool, np.bool_)):
        raise TypeError(f"return_model must be a bool, got {type(return_model).__name__}")
    for name, value in (("n_users", n_users), ("n_items", n_items)):
        if value > _MAX_DIMENSION:
            raise ValueError(f"{name} must be at most {_MAX_DIMENSION}, got {value}")
    if nnz > n_users * n_items:
        raise ValueError(f"nnz={nnz} exceeds n_users * n_items = {n_users * n_items}")
    rng = check_random_state(random_state)

    popularity = (rng.permutation(n_items) + 1.0 + popularity_offset) ** -popularity_exponent
    affinity = rng.dirichlet(np.full(rank, float(item_concentration)), size=n_items)
    topics = popularity[:, None] * affinity
    topics /= topics.sum(axis=0, keepdims=True)
    tastes = rng.dirichlet(np.full(rank, float(taste_concentration)), size=n_users)
    activity = rng.lognormal(0.0, activity_sigma, size=n_users)
    activity /= activity.sum()
    # Row-wise cumulative probabilities laid end to end, row r shifted by r: one sorted array,
    # searched once for all draws (a draw from row r is r + a uniform number).
    taste_table = _shifted_cumulative(tastes)
    topic_table = _shifted_cumulative(topics.T)

    keys = np.empty(0, dtype=np.int64)
    counts = np.empty(0, dtype=np.int64)
    draws = nnz
    for _ in range(16):  # repeated draws merge into one entry; draw again for the shortfall
        if draws <= 0:
            break
        users = np.repeat(np.arange(n_users, dtype=np.int64), rng.multinomial(draws, activity))
        topic = _draw_rows(taste_table, users, rank, rng)
        items = _draw_rows(topic_table, topic, n_items, rng)
        new_keys = np.sort(users * n_items + items)
        merged = np.concatenate([keys, new_keys])
        order = np.argsort(merged, kind="stable")
        keys, counts = _sum_runs(merged[order], np.concatenate([counts, np.ones(draws, np.int64)])[order])
        draws = int((nnz - keys.size) * 1.5) + 1 if keys.size < nnz * 0.995 else 0
    if keys.size > nnz:
        keep = np.sort(rng.choice(keys.size, size=nnz, replace=False))
        keys, counts = keys[keep], counts[keep]

    rows = keys // n_items
    indptr = np.zeros(n_users + 1, dtype=np.int32 if keys.size < 2**31 else np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    matrix = sp.csr_matrix(
        (counts.astype(np.float32), (keys % n_items).astype(indptr.dtype), indptr), shape=(n_users, n_items)
    )
    if return_model:
        return matrix, tastes.astype(np.float32), topics.astype(np.float32)
    return matrix


def _shifted_cumulative(probabilities: np.ndarray) -> np.ndarray:
    """Each row's cumulative sums, ending at exactly 1, plus the row's index; flattened."""
    table = np.cumsum(probabilities, axis=1)
    table /= table[:, -1:]
    table[:, -1] = 1.0
    table += np.arange(len(table), dtype=np.float64)[:, None]
    return table.ravel()


def _draw_rows(table: np.ndarray, rows: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """One column per entry of ``rows``, drawn from that row of a :func:`_shifted_cumulative` table."""
    found = np.searchsorted(table, rows + rng.random(len(rows)), side="right") - rows * width
    return np.clip(found, 0, width - 1)


from recore.movielens import DatasetError, MovieLens, movielens  # noqa: E402  (re-exported)

__all__ = ["DatasetError", "MovieLens", "movielens", "synthetic", "synthetic_preferences", "synthetic_ratings"]
