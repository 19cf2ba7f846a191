"""recore on a Dask cluster: distributed ALS and distributed all-users top-k.

The workers run the same kernels as a single machine (:mod:`recore.kernels`,
:func:`recore.topk`) on their shards; Dask (``dask.distributed``) moves the data. Install the
extra with ``pip install 'recore[distributed]'``.

- :class:`ALS` (also :class:`DistributedALS`): :class:`recore.ALS` fitted on the cluster,
  ``fit(user_items, client=None)``.
- :func:`recommend_all`: top-k for every user with item factors sharded across workers.
- :class:`WorkerLostError`: raised when lost workers could not be recovered from.

See the README's "Distributed" section for the data flow and its scaling model.
"""

from recore.distributed._als import DistributedALS
from recore.distributed._cluster import WorkerLostError
from recore.distributed._topk import merge_topk, recommend_all

#: ``recore.distributed.ALS``: the distributed estimator under the single-machine name.
ALS = DistributedALS

__all__ = ["ALS", "DistributedALS", "WorkerLostError", "merge_topk", "recommend_all"]
