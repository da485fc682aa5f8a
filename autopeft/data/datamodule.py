"""The Lightning data module: tokenised splits, seeded shuffling, dynamic padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from autopeft.data.cache import Tokenisation, tokenize_splits
from autopeft.data.encoding import make_collator
from autopeft.data.protocol import check_protocol
from autopeft.tasks.spec import TaskSpec


class TaskDataModule(pl.LightningDataModule):
    """Lightning data module for one task: cached tokenisation, dynamic padding.

    Args:
        spec: The task.
        tokenizer: A Hugging Face tokenizer (also used for padding).
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size.
        tokenisation: Length, caps, data seed and protocol (which splits are validation and test).
        cache_dir: Tokenised cache directory.
        num_workers: DataLoader workers.
        seed: Seed of the training shuffle order.

    """

    def __init__(
        self,
        spec: TaskSpec,
        tokenizer: Any,
        *,
        batch_size: int,
        eval_batch_size: int,
        tokenisation: Tokenisation | None = None,
        cache_dir: Path,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.tokenisation = Tokenisation() if tokenisation is None else tokenisation
        check_protocol(self.tokenisation.protocol)
        self.cache_dir = Path(cache_dir)
        self.num_workers = num_workers
        self.seed = seed
        self.cache_hit: bool | None = None
        self.datasets: datasets.DatasetDict | None = None
        self.collate_fn = make_collator(spec, tokenizer)

    def setup(self, stage: str | None = None) -> None:
        """Tokenise (or load from cache) once; later calls are no-ops."""
        if self.datasets is not None:
            return
        self.datasets, self.cache_hit = tokenize_splits(self.spec, self.tokenizer, self.tokenisation, self.cache_dir)

    def _split(self, name: str) -> datasets.Dataset:
        self.setup()
        assert self.datasets is not None
        return self.datasets[name]

    @property
    def num_train_examples(self) -> int:
        """Number of training rows after capping (runs :meth:`setup` if needed)."""
        return len(self._split("train"))

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        # A dedicated seeded generator makes the shuffle order depend on ``seed`` only.
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self._split(name),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Return shuffled training batches (order fixed by ``seed``)."""
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Return validation batches in dataset order."""
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Return test batches in dataset order."""
        return self._loader("test", self.eval_batch_size, shuffle=False)
