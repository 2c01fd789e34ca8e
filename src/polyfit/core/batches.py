"""What each training step sees: the whole table (the seed's full batch), or mini-batches of a
seeded shuffle through a DataLoader that can resume at any step."""

import itertools

import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from polyfit.core.fit import Batches


def full_batch(X: torch.Tensor, y: torch.Tensor) -> Batches:
    """The same X and y at every step, as the seed trains."""
    return itertools.repeat((X, y))


class ShuffledBatches(Sampler):
    """The row indices of each mini-batch: a seeded shuffle of the rows, cut into batches, then
    another shuffle for the next epoch, without end.

    Its state (state_dict) is the generator as it was before this epoch's shuffle and the
    batches of the epoch already taken, so a resumed training draws the same batches.
    """

    def __init__(self, rows: int, batch_size: int, seed: int):
        self.rows, self.batch_size = rows, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch_start = self.generator.get_state()
        self.taken = 0  # batches of this epoch already handed out

    def __iter__(self):
        while True:
            self.generator.set_state(self.epoch_start)
            order = torch.randperm(self.rows, generator=self.generator)
            for batch in order.split(self.batch_size)[self.taken :]:
                self.taken += 1
                yield batch
            self.epoch_start, self.taken = self.generator.get_state(), 0

    def state_dict(self) -> dict:
        return {"epoch_start": self.epoch_start, "taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_start, self.taken = state["epoch_start"], state["taken"]


def mini_batches(X: torch.Tensor, y: torch.Tensor, sampler: ShuffledBatches) -> Batches:
    """(X, y) of each batch the sampler draws. The sampler hands the DataLoader a whole batch
    of indices at a time (batch_size=None), so each fetch is one tensor index, not B rows
    fetched one by one and stacked."""
    return iter(DataLoader(TensorDataset(X, y), sampler=sampler, batch_size=None))
