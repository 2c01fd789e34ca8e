"""The data: a table of features X (N, F) and a target y (N,), split into the rows the model
trains on and the rows it is scored on but never sees (held out).

Two sources, chosen by params.data.source, each returning (train, held_out):
- function: the tutorial's y = sin(x) at evenly spaced x; held out, the noise-free function on
  a dense grid over the same range (what the model should have learned between its points);
- csv: a file of yours, with a seeded share of its rows held out.
For another format, write a reader that returns a Table, then split it as from_csv does.
"""

import csv
import math
from typing import NamedTuple

import torch

from polyfit.errors import UsageError

TARGET_FUNCTIONS = {"sin": torch.sin, "cos": torch.cos, "exp": torch.exp}
FLOAT32_MAX = torch.finfo(torch.float32).max


class Table(NamedTuple):
    X: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) float32
    features: tuple[str, ...]  # the F column names


def from_function(
    target: str,
    x_min: float,
    x_max: float,
    n_samples: int,
    noise_std: float,
    seed: int,
    held_out_points: int,
) -> tuple[Table, Table]:
    """The seed's x and y = target(x) (plus seeded Gaussian noise), and the held-out grid."""
    function = TARGET_FUNCTIONS[target]
    x = torch.linspace(x_min, x_max, n_samples)
    y = function(x)
    if noise_std > 0:
        generator = torch.Generator().manual_seed(seed)
        y = y + noise_std * torch.randn(n_samples, generator=generator)
    grid = torch.linspace(x_min, x_max, held_out_points)
    exact = function(grid.double()).float()  # the noise-free target, rounded once
    return Table(x.unsqueeze(-1), y, ("x",)), Table(grid.unsqueeze(-1), exact, ("x",))


def from_csv(
    path: str, features: list[str], target: str, held_out_fraction: float, split_seed: int
) -> tuple[Table, Table]:
    """The file's feature and target columns, split by a seeded shuffle of its rows."""
    return split(read_csv(path, features, target), held_out_fraction, split_seed)


def read_csv(path: str, features: list[str], target: str) -> Table:
    """A CSV file with a header row: the feature columns and the target, float32."""
    values = read_columns(path, [*features, target])  # (N, F + 1)
    if len(values) < 2:
        raise UsageError(f"{path}: {len(values)} row(s) of data; at least 2 are needed")
    return Table(values[:, :-1].contiguous(), values[:, -1].contiguous(), tuple(features))


def read_columns(path: str, names: list[str]) -> torch.Tensor:
    """(N, len(names)) float32: the named columns of a CSV file with a header row, every value
    checked to be a finite float32 number; other columns are ignored."""
    try:
        # utf-8-sig: also the byte-order mark spreadsheets write at the start of "CSV UTF-8"
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise UsageError(f"{path}: empty: expected a header row, then one row per point")
            columns = [_column(path, header, name) for name in names]
            rows = [_numbers(path, reader.line_num, row, columns, header) for row in reader if row]
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not UTF-8 text: {error.reason} at byte {error.start}") from None
    except csv.Error as error:
        raise UsageError(f"{path}: not a CSV file: {error}") from None
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(names))


def _column(path: str, header: list[str], name: str) -> int:
    if name not in header:
        raise UsageError(f"{path}: no column {name!r} (the header has {header})")
    return header.index(name)


def _numbers(path: str, line: int, row: list[str], columns: list[int], header) -> list[float]:
    """The row's values in `columns`, each a finite float32 number."""
    if len(row) != len(header):
        raise UsageError(f"{path}: line {line}: {len(row)} values, the header has {len(header)}")
    numbers = []
    for column in columns:
        text = row[column].strip()
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not abs(number) <= FLOAT32_MAX:  # nan, inf, an empty cell or a word
            raise UsageError(
                f"{path}: line {line}, column {header[column]!r}: {text!r} is not a finite "
                "float32 number"
            )
        numbers.append(number)
    return numbers


def split(table: Table, held_out_fraction: float, seed: int) -> tuple[Table, Table]:
    """(train, held out): a seeded shuffle's first round(N * fraction) rows are held out (at
    least one each side); each part keeps the file's row order."""
    rows = len(table.y)
    held = min(max(1, round(rows * held_out_fraction)), rows - 1)
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    held_out, train = order[:held].sort().values, order[held:].sort().values
    return _rows(table, train), _rows(table, held_out)


def _rows(table: Table, index: torch.Tensor) -> Table:
    return Table(table.X[index], table.y[index], table.features)


# params.data.source -> the reader of its block (whose keys are the reader's arguments)
SOURCES = {"function": from_function, "csv": from_csv}
