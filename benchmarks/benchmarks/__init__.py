"""asv benchmarks for recore; one module per algorithm (``bench_als.py`` for ALS)."""
