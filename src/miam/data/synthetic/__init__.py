"""Synthetic landscapes that keep their truth: the demo's data and the benchmark-shaped presets.

:func:`make_dataset` draws a landscape (:mod:`~miam.data.synthetic.generator`), optionally
shaped like a benchmark (:mod:`~miam.data.synthetic.presets`);
:func:`~miam.data.synthetic.pool.synthetic_pool` adds unlabelled sites for pretraining.
"""

from miam.data.synthetic.generator import make_dataset

__all__ = ["make_dataset"]
