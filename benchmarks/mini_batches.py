"""Section "Mini-batches": fetching batches through the product's ShuffledBatches (a DataLoader
with batch_size=None, one tensor index a batch) against a DataLoader over a TensorDataset with
batch_size (rows fetched one by one, then collated). CPU, in this process."""

import math
import time

from common import Row, Section, interleave, median, ratio, spread

FEATURES, BATCH = 8, 4096


def mini_batches(rounds: int, rows: int = 1_000_000, row_by_row_batches: int = 40) -> Section:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from polyfit.core.batches import ShuffledBatches
    from polyfit.core.batches import mini_batches as product_batches

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # train.threads in params.yaml
    generator = torch.Generator().manual_seed(0)
    X, y = torch.randn(rows, FEATURES, generator=generator), torch.randn(rows, generator=generator)
    epoch = math.ceil(rows / BATCH)

    def ms_per_batch(batches, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            next(batches)
        return 1e3 * (time.perf_counter() - started) / count

    def product() -> float:
        return ms_per_batch(product_batches(X, y, ShuffledBatches(rows, BATCH, 0)), epoch)

    def row_by_row() -> float:
        shuffle = torch.Generator().manual_seed(0)
        loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True, generator=shuffle)
        return ms_per_batch(iter(loader), row_by_row_batches)

    try:
        ms = interleave(rounds, {"product": product, "row by row": row_by_row})
    finally:
        torch.set_num_threads(threads)
    per_epoch = {
        name: f"{median(values) * epoch / 1e3:.2f} s an epoch" for name, values in ms.items()
    }
    section = Section(f"Mini-batches ({rows:.0e} rows x {FEATURES} features, batch {BATCH}, CPU)")
    section.rows = [
        Row(
            "ShuffledBatches + DataLoader(batch_size=None) (core/batches.py)",
            f"{spread(ms['product'], 'ms/batch', 3)}, {per_epoch['product']}",
        ),
        Row(
            "DataLoader(TensorDataset, batch_size, shuffle=True)",
            f"{spread(ms['row by row'], 'ms/batch', 3)}, {per_epoch['row by row']}",
        ),
        Row("row by row / ShuffledBatches", f"{ratio(ms['row by row'], ms['product']):.0f}x"),
    ]
    section.notes = [
        f"{rounds} round(s), alternating, in-process with 1 torch thread (train.threads). "
        f"ShuffledBatches: one whole epoch ({epoch} batches); the row-by-row DataLoader: its first "
        f"{row_by_row_batches} batches (each costs the same: {BATCH} `__getitem__` calls and a "
        "collate). Both include the epoch's seeded shuffle. Fetching only: no training step.",
    ]
    return section
