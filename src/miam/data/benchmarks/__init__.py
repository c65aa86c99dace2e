"""The published benchmarks, read from their released layout and decoded once into a cache.

One path for all three: a :class:`~miam.data.benchmarks.raw.RawSource` subclass per
benchmark (:mod:`~miam.data.benchmarks.geoplant`, :mod:`~miam.data.benchmarks.satbird`,
:mod:`~miam.data.benchmarks.taxabench`) says where the files are and how to decode rows;
:func:`~miam.data.benchmarks.prepare.prepare` writes the memory-mapped cache, and
:func:`~miam.data.benchmarks.cached.open_cache` checks it against the raw files, splits it
and opens it as a :class:`~miam.data.benchmarks.cached.CachedDataset`.
"""
