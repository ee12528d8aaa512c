"""Reading a table one chunk of rows at a time, for ``streamrl predict``
(:mod:`streamrl.predict`): where the input is (a CSV or Parquet file, standard input, or a
dataset shipped in the statsmodels wheel), which columns are the cumulant, the features and
the date, and the numbers of each chunk (missing values found, non-numeric values refused).

Nothing here imports JAX.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from streamrl.errors import ConfigError, MissingExtraError

__all__ = ["resolve_input", "read_chunks", "Columns", "choose_columns", "numbers", "date_features", "DATE_NAMES"]

DATE_NAMES = ("date", "datetime", "time", "timestamp", "ds", "year")
"""Column names (case-insensitive) recognised as the date/time column."""
_MISSING = ("", "NA", "N/A", "NaN", "nan", "NULL", "null", "None", "#N/A", "<NA>")
"""Cells of standard input read as a missing value (pandas' defaults for files)."""


def resolve_input(name: str) -> Path | None:
    """The file of ``name`` (None for standard input); ``statsmodels:NAME`` is the CSV the
    statsmodels wheel ships under ``statsmodels/datasets/NAME/``."""
    if name == "-":
        return None
    if name.startswith("statsmodels:"):
        import importlib.util

        spec = importlib.util.find_spec("statsmodels")
        if spec is None or not spec.submodule_search_locations:
            raise MissingExtraError("statsmodels:NAME needs statsmodels: pip install 'streamrl[data]'")
        root = Path(list(spec.submodule_search_locations)[0]) / "datasets"
        dataset = name.split(":", 1)[1]
        path = root / dataset / f"{dataset}.csv"
        if not path.is_file():
            names = sorted(p.parent.name for p in root.glob("*/*.csv") if p.stem == p.parent.name)
            raise ConfigError(f"statsmodels ships no dataset {dataset!r}; choose one of {', '.join(names)}")
        return path
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"{name} is not a file; pass a CSV or Parquet file, `-` for standard input, or statsmodels:co2")
    return path


def read_chunks(path: Path | None, size: int) -> Iterator:
    """DataFrames of at most ``size`` rows (values as read: strings for CSV) of the input, in order."""
    import pandas as pd

    if path is None:
        header = sys.stdin.readline()
        if not header.strip():
            raise ConfigError("standard input is empty: the first line must be the CSV header")
        columns = next(csv.reader([header]))
        for line in sys.stdin:
            if line.strip():
                values = [None if v.strip() in _MISSING else v for v in next(csv.reader([line]))]
                if len(values) != len(columns):
                    raise ConfigError(f"standard input: a line has {len(values)} fields, the header {len(columns)}: {line.strip()[:80]!r}")
                yield pd.DataFrame([values], columns=columns)
        return
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingExtraError("reading Parquet needs pyarrow: pip install 'streamrl[data]'") from None
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
                yield batch.to_pandas()
        except Exception as exc:  # pyarrow raises its own types for a damaged file
            raise ConfigError(f"{path} is not a readable Parquet file ({type(exc).__name__}: {str(exc)[:120]})") from None
        return
    try:
        for df in pd.read_csv(path, chunksize=size, dtype=str, skipinitialspace=True):
            if len(df):
                yield df
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path} is empty: the first line must be the CSV header") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable CSV file ({str(exc).strip().splitlines()[-1][:160]})") from None


def _is_numeric(col) -> bool:
    import pandas as pd

    values = col.dropna()
    return pd.api.types.is_numeric_dtype(col) or bool(len(values)) and pd.to_numeric(values, errors="coerce").notna().all()


def _is_date(col) -> bool:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(col):
        return True
    values = col.dropna()
    if not len(values) or _is_numeric(col):
        return False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(pd.to_datetime(values, errors="coerce").notna().all())


@dataclasses.dataclass(frozen=True)
class Columns:
    cumulant: str
    features: tuple[str, ...]
    date: str | None
    date_features: bool
    skipped: tuple[str, ...]

    @property
    def dim(self) -> int:
        return len(self.features) + 6 * self.date_features


def choose_columns(cfg, df, where: str) -> Columns:
    """(``cfg``: a :class:`~streamrl.predict.PredictConfig`.) Which columns are the cumulant, the features and the date, from the header and the first rows."""
    names = [str(c) for c in df.columns]
    df.columns = names

    def need(name, what):
        if name not in names:
            raise ConfigError(f"{what} column {name!r} is not in {where} (its columns: {', '.join(names)})")

    need(cfg.cumulant, "--cumulant")
    if cfg.date_column == "none":
        date = None
    elif cfg.date_column != "auto":
        need(cfg.date_column, "--date-column")
        date = cfg.date_column
    else:
        date = next((n for n in names if n.lower() in DATE_NAMES and n != cfg.cumulant), None)
        date = date or next((n for n in names if n != cfg.cumulant and _is_date(df[n])), None)
    if date == cfg.cumulant:
        raise ConfigError(f"--date-column {date} is the cumulant column")
    if cfg.date_features and date is None:
        raise ConfigError(f"--date-features: {where} has no date column; name it with --date-column")
    if cfg.features is not None:
        for n in cfg.features:
            need(n, "--features")
        features, skipped = tuple(cfg.features), ()
    else:
        rest = [n for n in names if n != date]
        features = tuple(n for n in rest if _is_numeric(df[n]) or n == cfg.cumulant)
        skipped = tuple(n for n in rest if n not in features)
    if not features and not cfg.date_features:
        raise ConfigError(f"{where} has no numeric feature column; name some with --features or add --date-features")
    return Columns(cfg.cumulant, features, date, cfg.date_features, skipped)


def date_features(values, first_row: int, where: str) -> np.ndarray:
    """sin/cos of time of day, day of week and day of year: float64 [n, 6]."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = pd.to_datetime(pd.Series(values).astype(str) if not pd.api.types.is_datetime64_any_dtype(values) else values, errors="coerce")
    bad = np.flatnonzero(t.isna().to_numpy())
    if len(bad):
        raise ConfigError(f"{where}, data row {first_row + bad[0]}: date {values.iloc[bad[0]]!r} is not a date/time")
    day = (t.dt.hour * 3600 + t.dt.minute * 60 + t.dt.second).to_numpy(float) / 86400
    week = t.dt.dayofweek.to_numpy(float) / 7
    year = (t.dt.dayofyear.to_numpy(float) - 1) / 365.25
    angles = 2 * np.pi * np.stack([day, week, year], axis=1)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def numbers(df, cols: Columns, first_row: int, where: str, nan: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x float64 [k, d], c float64 [k], rows int64 [k])`` of a chunk's complete rows (rows
    with a missing value dropped, or an error under ``--nan stop``).

    Raises:
      ConfigError: a non-numeric value, a missing value under ``--nan stop``, a bad date.
    """
    import pandas as pd

    used = list(dict.fromkeys((*cols.features, cols.cumulant)))
    data = {}
    for name in used:
        raw = df[name]
        num = pd.to_numeric(raw, errors="coerce").astype(float)
        bad = np.flatnonzero((raw.notna() & num.isna()).to_numpy())
        if len(bad):
            raise ConfigError(
                f"{where}, data row {first_row + bad[0]}: column {name!r} has the non-numeric value {raw.iloc[bad[0]]!r}; "
                "fix it, or leave the cell empty (a missing value: --nan)"
            )
        data[name] = num.to_numpy(float)
    x = np.stack([data[n] for n in cols.features], axis=1) if cols.features else np.zeros((len(df), 0))
    if cols.date_features:
        x = np.concatenate([x, date_features(df[cols.date].reset_index(drop=True), first_row, where)], axis=1)
    c = data[cols.cumulant]
    ok = np.isfinite(x).all(axis=1) & np.isfinite(c)
    if nan == "stop" and not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise ConfigError(f"{where}, data row {first_row + i}: a missing or non-finite value (--nan stop); --nan skip skips such rows")
    rows = first_row + np.arange(len(df))
    return x[ok], c[ok], rows[ok]
