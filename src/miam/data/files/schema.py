"""The YAML description of a ``files`` dataset: sections, their keys and defaults.

Every section is a small dataclass; :func:`parse_files_params` builds them from the
``data.params`` mapping of a config and rejects unknown keys by name, listing the valid
ones, with the path of the offending key (``data.params.rasters[1].patch_size``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from miam._validation import check_keys
from miam.errors import ConfigError

#: file suffixes read as images of an image folder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
SPLIT_METHODS = ("spatial", "column", "random")


@dataclass
class Section:
    """Base of every section: construction from a mapping with named errors."""

    #: keys that must be given
    required: ClassVar[tuple[str, ...]] = ()
    #: keys holding a nested section: key -> class
    nested: ClassVar[dict[str, type]] = {}
    #: keys whose value may be one string standing for a one-item list
    lists: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls, value: Any, where: str) -> Section:
        if isinstance(value, str) and "path" in [f.name for f in fields(cls)]:
            value = {"path": value}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of keys, got {value!r}.")
        valid = [f.name for f in fields(cls)]
        check_keys(where, value, valid)
        missing = [k for k in cls.required if value.get(k) is None]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {missing}; valid keys are {valid}.")
        kwargs = dict(value)
        for key in cls.lists:
            if isinstance(kwargs.get(key), str):
                kwargs[key] = [kwargs[key]]
        for key, sub in cls.nested.items():
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = sub.parse(kwargs[key], f"{where}.{key}")
        return cls(**kwargs)


@dataclass
class SitesSection(Section):
    """The sites table: one row per site."""

    required: ClassVar = ("path",)
    #: CSV (``.tsv``: tab-separated) or Parquet (``.parquet``, ``.pq``) file
    path: str | None = None
    #: site id column (any type: read as text)
    id: str = "site_id"
    #: coordinate columns; default: the first of lon/lat, longitude/latitude, x/y found
    x: str | None = None
    y: str | None = None
    #: CRS of x/y (anything pyproj reads); null: no CRS (then rasters must have none either)
    crs: str | None = "EPSG:4326"


@dataclass
class OccurrencesSection(Section):
    """A long table of observed presences: one row per (site, species)."""

    required: ClassVar = ("path",)
    path: str | None = None
    #: site id column (default: the sites table's id column name)
    id: str | None = None
    species: str = "species"


@dataclass
class BackgroundSection(Section):
    """Background points for presence-only data, drawn inside the rasters' valid area."""

    count: int = 1000
    seed: int = 0
    #: never put a background point in a raster cell that holds a presence
    exclude_presence_cells: bool = True
    #: the raster modality whose first layer defines the cells (default: the first raster modality)
    raster: str | None = None


@dataclass
class PresenceOnlySection(Section):
    """Presence-only records (GBIF-like): one row per observation with coordinates and species."""

    required: ClassVar = ("path",)
    nested: ClassVar = {"background": BackgroundSection}
    path: str | None = None
    species: str = "species"
    x: str | None = None
    y: str | None = None
    crs: str | None = "EPSG:4326"
    background: BackgroundSection = field(default_factory=BackgroundSection)


@dataclass
class SpeciesTableSection(Section):
    """Wide species columns of another table than the sites table, joined on the site id."""

    required: ClassVar = ("path",)
    lists: ClassVar = ("columns",)
    path: str | None = None
    #: site id column (default: the sites table's id column name)
    id: str | None = None
    #: names or glob patterns (default: every column but the id)
    columns: list[str] | None = None


@dataclass
class TargetsSection(Section):
    """What to predict: give exactly one of ``species``, ``occurrences``, ``label``, ``presence_only``."""

    nested: ClassVar = {"occurrences": OccurrencesSection, "presence_only": PresenceOnlySection}
    lists: ClassVar = ("species",)
    #: wide species columns (value > 0 is a presence): names or glob patterns of the sites table's
    #: columns, or ``{path, id, columns}`` for another table
    species: list[str] | SpeciesTableSection | None = None
    occurrences: OccurrencesSection | None = None
    #: one column of the sites table holding a class label (multiclass task)
    label: str | None = None
    presence_only: PresenceOnlySection | None = None
    #: species with fewer presences (over all sites) are dropped, with a note
    min_presences: int = 1
    #: species with fewer absences (over all sites) are dropped, with a note
    min_absences: int = 0

    @classmethod
    def parse(cls, value: Any, where: str) -> TargetsSection:
        out = super().parse(value, where)
        if isinstance(out.species, Mapping):
            out.species = SpeciesTableSection.parse(out.species, f"{where}.species")
        return out

    @property
    def mode(self) -> str:
        return next(k for k in ("species", "occurrences", "label", "presence_only") if getattr(self, k) is not None)


@dataclass
class TableSection(Section):
    """A tabular modality: columns of a table joined on the site id."""

    required: ClassVar = ("name",)
    lists: ClassVar = ("columns", "exclude", "categorical")
    name: str | None = None
    #: default: the sites table
    path: str | None = None
    #: default: the sites table's id column name
    id: str | None = None
    #: names or glob patterns (default: every column but the id, coordinates, targets and split)
    columns: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    #: numeric columns to treat as categorical (text columns always are)
    categorical: list[str] = field(default_factory=list)


@dataclass
class TimeSeriesSection(Section):
    """Wide time-series columns grouped into segment tokens: ``{variable: glob pattern}``."""

    required: ClassVar = ("name", "variables")
    name: str | None = None
    path: str | None = None
    id: str | None = None
    #: e.g. ``{tas: "tas_*", pr: "pr_*"}``; matched columns are put in natural order (tas_2 < tas_10)
    variables: dict[str, str] | None = None
    #: time steps per token
    segment: int = 1


@dataclass
class RasterSection(Section):
    """GeoTIFF layers read at each site: one token per layer, or an N x N patch as image tokens."""

    required: ClassVar = ("name", "paths")
    lists: ClassVar = ("paths",)
    name: str | None = None
    #: a list of files or ``{layer name: file}``; every band of every file is one layer
    paths: list[str] | dict[str, str] | None = None
    #: 1-based band numbers to read from each file (default: all)
    bands: list[int] | None = None
    #: N: read an N x N pixel patch around the site (image tokens) instead of the site's pixel
    patch: int | None = None
    #: side of one image token, in pixels (default: N, one token per patch)
    token_size: int | None = None
    #: the layers hold classes (land cover), not numbers: an embedding per class, or with ``patch``
    #: one channel per class (one-hot)
    categorical: bool = False


@dataclass
class ImagesSection(Section):
    """A folder of images named ``{site_id}.{jpg,jpeg,png,tif,tiff}``; a missing file is hidden."""

    required: ClassVar = ("name", "folder")
    name: str | None = None
    folder: str | None = None
    #: images are resized to size x size
    size: int = 64
    #: side of one image token, in pixels
    token_size: int = 16
    #: PIL mode: RGB, L, ...
    mode: str = "RGB"


@dataclass
class SplitSection(Section):
    """How sites are split into train/val/test."""

    #: ``spatial`` (square blocks, whole blocks per split), ``column`` (a split column) or ``random``
    method: str = "spatial"
    #: block side for ``spatial``, in km (projected CRSs use their own unit, converted)
    block_km: float = 10.0
    fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 0
    #: for ``column``: a sites-table column holding train/val/test
    column: str = "split"


@dataclass
class FilesParams(Section):
    """The whole description (the ``data.params`` of a ``files`` dataset)."""

    nested: ClassVar = {"sites": SitesSection, "targets": TargetsSection, "split": SplitSection}
    #: folder that relative paths start from (default: the working directory)
    root: str | None = None
    sites: SitesSection | None = None
    targets: TargetsSection | None = None
    tables: list[TableSection] = field(default_factory=list)
    timeseries: list[TimeSeriesSection] = field(default_factory=list)
    rasters: list[RasterSection] = field(default_factory=list)
    images: list[ImagesSection] = field(default_factory=list)
    split: SplitSection = field(default_factory=SplitSection)
    #: show progress bars while reading rasters and images
    progress: bool = True


_LISTS = {"tables": TableSection, "timeseries": TimeSeriesSection, "rasters": RasterSection, "images": ImagesSection}


def parse_files_params(params: Mapping[str, Any], where: str = "data.params") -> FilesParams:
    """Build and check the sections of a ``files`` dataset description.

    Raises:
        ConfigError: an unknown or missing key (naming its path and the valid keys), an
            inconsistent choice of targets, or a modality name used twice.

    Examples:
        >>> p = parse_files_params({"sites": "sites.csv", "targets": {"species": "sp_*"},
        ...                         "rasters": [{"name": "climate", "paths": ["bio1.tif"]}]})
        >>> p.sites.id, p.targets.species, p.rasters[0].paths
        ('site_id', ['sp_*'], ['bio1.tif'])
        >>> parse_files_params({"sites": {"path": "s.csv", "lat_column": "y"}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        miam.errors.ConfigError: data.params.sites: unknown key(s) ['lat_column']; valid keys are ['path', 'id', ...
    """
    params = dict(params)
    lists = {k: params.pop(k) for k in _LISTS if k in params}
    out = FilesParams.parse(params, where)
    for key, cls in _LISTS.items():
        value = lists.get(key) or []
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{where}.{key} must be a list of mappings, got {value!r}.")
        setattr(out, key, [cls.parse(v, f"{where}.{key}[{i}]") for i, v in enumerate(value)])
    _check(out, where)
    return out


def _check(p: FilesParams, where: str) -> None:
    if p.targets is None:
        raise ConfigError(f"{where}: missing key 'targets' (one of species, occurrences, label, presence_only).")
    chosen = [k for k in ("species", "occurrences", "label", "presence_only") if getattr(p.targets, k) is not None]
    if len(chosen) != 1:
        raise ConfigError(f"{where}.targets: give exactly one of ['species', 'occurrences', 'label', "
                          f"'presence_only'], got {chosen}.")
    if p.targets.presence_only is not None:
        if p.tables or p.timeseries or p.images:
            raise ConfigError(f"{where}: presence-only sites are raster cells with no site id, so only "
                              f"'rasters' modalities can describe them (remove tables/timeseries/images).")
        if not p.rasters:
            raise ConfigError(f"{where}: presence_only needs at least one raster modality (background points are "
                              f"drawn inside the rasters' valid area).")
    elif p.sites is None:
        raise ConfigError(f"{where}: missing key 'sites' (the sites table: path, id, x, y, crs).")
    if p.split.method not in SPLIT_METHODS:
        raise ConfigError(f"{where}.split.method must be one of {list(SPLIT_METHODS)}, got {p.split.method!r}.")
    if len(p.split.fractions) != 3 or abs(sum(p.split.fractions) - 1) > 1e-6 or min(p.split.fractions) < 0:
        raise ConfigError(f"{where}.split.fractions must be 3 shares (train, val, test) summing to 1, "
                          f"got {p.split.fractions}.")
    names = [s.name for group in (p.tables, p.timeseries, p.rasters, p.images) for s in group]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: modality name(s) {dup} used twice; every table, time series, raster and "
                          f"image folder needs its own name.")
    if not names:
        raise ConfigError(f"{where}: no modality: describe at least one of tables, timeseries, rasters, images.")
    for i, r in enumerate(p.rasters):
        if r.patch is not None:
            size = r.token_size or r.patch
            if r.patch < 1 or size < 1 or r.patch % size:
                raise ConfigError(f"{where}.rasters[{i}]: patch={r.patch} must be a multiple of "
                                  f"token_size={size}.")
    for i, im in enumerate(p.images):
        if im.size < 1 or im.token_size < 1 or im.size % im.token_size:
            raise ConfigError(f"{where}.images[{i}]: size={im.size} must be a multiple of token_size={im.token_size}.")
    for i, ts in enumerate(p.timeseries):
        if not isinstance(ts.variables, Mapping) or not ts.variables:
            raise ConfigError(f"{where}.timeseries[{i}].variables must map variable names to column patterns, "
                              f"e.g. {{tas: 'tas_*'}}; got {ts.variables!r}.")
