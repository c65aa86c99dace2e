"""The data contract: specs, batches, datasets, splits, reports, patches and unlabelled pools.

Every source (benchmark cache, user files, synthetic landscape) produces these, and the
model, training and explanations read only these. Nothing here imports another data
sub-package.
"""
