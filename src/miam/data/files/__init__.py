"""The user's own data: survey tables, rasters, time series and image folders, described in YAML.

:func:`~miam.data.files.loader.load_files` (``data.name: files``) reads the sections the
schema (:mod:`~miam.data.files.schema`) checks: tables and time series
(:mod:`~miam.data.files.columns`), rasters (:mod:`~miam.data.files.rasters`), images
(:mod:`~miam.data.files.images`) and targets (:mod:`~miam.data.files.targets`), on the sites
:mod:`~miam.data.files.io` reads. :mod:`~miam.data.files.grid` and
:mod:`~miam.data.files.pools` read the same sources on new sites or raster grids, for maps
and pretraining.
"""
