"""The synthetic world: generators, task recipes and the benchmarks' twins.

Only the synthetic path imports this package (``bench.prepare`` when no real data is used, the
tiny base's pretraining, the twin writer). Real shards decode, render and train without it:
what both share lives in :mod:`mcl.data.schema`, :mod:`mcl.data.canvas` and
:mod:`mcl.data.render`.
"""
