"""LightningModule that trains and evaluates one PEFT configuration on one task."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from transformers import get_linear_schedule_with_warmup

from autopeft.peft.adamix import symmetric_kl
from autopeft.tasks.metrics import compute_metrics, generation_metrics
from autopeft.tasks.spec import TaskSpec
from autopeft.training.model import AutoPeftModel

#: The batch entries the model reads (a generation batch holds more: prompts, answers, choices).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class PeftLightningModule(pl.LightningModule):
    """Trains the trainable part of an :class:`AutoPeftModel` with AdamW and linear warm-up/decay.

    Metrics are computed once per evaluation over the whole split (Matthews correlation, F1
    and correlations are not averages of per-batch values) and logged as ``val/<metric>``
    and ``test/<metric>``.

    Generation tasks train on the causal-LM loss of the answer tokens (:meth:`generation_loss`)
    and are evaluated on what the model writes: each evaluation batch is decoded greedily (at
    most ``task.max_answer_tokens`` tokens, up to EOS) and compared with the gold answers, and
    with answer choices each row's candidates are ranked by summed answer log-likelihood.

    Args:
        model: The model to train.
        task: The task, for its loss and metrics.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: Fraction of all optimiser steps spent warming up linearly.
        adam_eps: AdamW epsilon.
        tokenizer: The backbone's tokenizer; generation tasks decode their answers with it.

    Raises:
        ValueError: On a generation task without a tokenizer.

    """

    def __init__(
        self,
        model: AutoPeftModel,
        task: TaskSpec,
        *,
        lr: float,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.06,
        adam_eps: float = 1e-8,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        if task.type == "generation" and tokenizer is None:
            raise ValueError(
                f"task {task.name!r} is a generation task: its module needs the tokenizer to decode answers"
            )
        self.tokenizer = tokenizer
        self.model = model
        self.task = task
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.adam_eps = adam_eps
        self.last_metrics: dict[str, dict[str, float]] = {}
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        # Generation: (decoded answers, gold answers, chosen choices or None, gold choices or None) per batch.
        self._generated: list[tuple[list[str], list[str], list[int] | None, list[int] | None]] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model outputs for a collated batch (labels are ignored)."""
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        return self.model(**inputs)

    def _loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.task.type == "regression":
            return F.mse_loss(outputs.float(), labels.float())
        return F.cross_entropy(outputs.float(), labels)

    def generation_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """A generation batch's loss: next-token cross-entropy over the answer tokens (and EOS) only."""
        return self.model.lm_loss(batch["input_ids"], batch["attention_mask"], batch["labels"])

    @property
    def consistency_weight(self) -> float:
        """Weight of AdaMix's consistency loss (0 unless the PEFT spec asks for it)."""
        spec = getattr(self.model, "spec", None)
        return float(getattr(spec, "adamix_consistency", 0.0) or 0.0)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss; raises :class:`DivergedError` on a non-finite loss.

        With AdaMix's consistency loss on (``peft.adamix_consistency`` > 0) the batch goes through
        the model twice, each pass with its own expert routing and dropout; the loss is the task
        loss of the first pass plus the weighted symmetric KL between the two passes' outputs
        (:func:`~autopeft.peft.adamix.symmetric_kl`), as in the AdaMix authors'
        ``RobertaForSequenceClassification.forward``. Regression outputs are single values, on
        which that KL is 0, so they take one pass. Generation batches take
        :meth:`generation_loss` alone.
        """
        size = batch["labels"].shape[0]
        if self.task.type == "generation":
            loss = self.generation_loss(batch)
            if not torch.isfinite(loss):
                raise DivergedError(f"training loss became {loss.item()} at step {self.global_step}")
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=size)
            return loss
        outputs = self(batch)
        loss = self._loss(outputs, batch["labels"])
        weight = self.consistency_weight
        if weight and self.task.type != "regression":
            consistency = symmetric_kl(outputs, self(batch))
            loss = loss + weight * consistency
            self.log("train/consistency", consistency, on_step=True, on_epoch=False, batch_size=size)
        if not torch.isfinite(loss):
            raise DivergedError(f"training loss became {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=size)
        return loss

    def _collect(self, batch: dict[str, torch.Tensor]) -> None:
        if self.task.type == "generation":
            self._collect_generation(batch)
            return
        self._outputs.append((self(batch).detach().float().cpu(), batch["labels"].detach().cpu()))

    def _collect_generation(self, batch: dict[str, Any]) -> None:
        """Decode the batch's answers greedily and, with choices, pick each row's likeliest one."""
        ids = self.model.greedy_decode(
            batch["prompt_ids"], batch["prompt_mask"], self.task.max_answer_tokens, self.tokenizer.eos_token_id
        )
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        chosen = gold = None
        if "choice_ids" in batch:
            scores = self.model.answer_log_likelihoods(
                batch["choice_ids"], batch["choice_mask"], batch["choice_labels"]
            ).cpu()
            rows = batch["choice_rows"].cpu()
            chosen = [int(scores[rows == r].argmax()) for r in range(len(texts))]
            gold = batch["gold_choice"].cpu().tolist()
        self._generated.append((texts, list(batch["answers"]), chosen, gold))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Collect outputs; metrics come at the end of the split."""
        self._collect(batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Collect outputs; metrics come at the end of the split."""
        self._collect(batch)

    def _split_metrics(self) -> dict[str, float] | None:
        """The metrics of the outputs collected over a split (None when nothing was collected)."""
        if self._generated:
            texts, answers, chosen, gold = (
                None if parts[0] is None else [item for part in parts for item in part]
                for parts in zip(*self._generated, strict=True)
            )
            self._generated.clear()
            return generation_metrics(self.task, texts, answers, chosen, gold)
        if not self._outputs:
            return None
        outputs = torch.cat([o for o, _ in self._outputs])
        labels = torch.cat([label for _, label in self._outputs])
        self._outputs.clear()
        return compute_metrics(self.task, outputs, labels)

    def _finish(self, split: str) -> None:
        metrics = self._split_metrics()
        if metrics is None:
            return
        self.last_metrics[split] = metrics
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, prog_bar=name == self.task.main_metric, sync_dist=False)

    def on_validation_epoch_start(self) -> None:  # noqa: D102 - Lightning hook
        self._outputs.clear()
        self._generated.clear()

    def on_validation_epoch_end(self) -> None:  # noqa: D102 - Lightning hook
        self._finish("val")

    def on_test_epoch_start(self) -> None:  # noqa: D102 - Lightning hook
        self._outputs.clear()
        self._generated.clear()

    def on_test_epoch_end(self) -> None:  # noqa: D102 - Lightning hook
        self._finish("test")

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over trainable parameters only, with linear warm-up then linear decay to 0."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        fused = bool(params) and params[0].is_cuda
        optimizer = torch.optim.AdamW(
            params, lr=self.lr, weight_decay=self.weight_decay, eps=self.adam_eps, fused=fused or None
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = math.ceil(self.warmup_ratio * total)
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class KeepBestTrainable(pl.Callback):
    """Remember the trainable weights of the best validation epoch and restore them at the end.

    Only trainable tensors are copied (a few MB for PEFT), so no checkpoint files are
    written per evaluation. Full fine-tuning copies the whole encoder.

    Args:
        monitor: The metric logged by :class:`PeftLightningModule`, e.g. ``val/accuracy``.

    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_metrics: dict[str, float] = {}
        self._state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if score > self.best_score or self._state is None:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            self.best_metrics = dict(pl_module.last_metrics.get("val", {}))
            self._state = {
                name: p.detach().to("cpu", copy=True) for name, p in pl_module.named_parameters() if p.requires_grad
            }

    def restore(self, pl_module: pl.LightningModule) -> None:
        """Load the remembered weights back into ``pl_module`` (no-op if none were kept)."""
        if self._state is None:
            return
        params = dict(pl_module.named_parameters())
        with torch.no_grad():
            for name, value in self._state.items():
                params[name].copy_(value)


class TrainThroughput(pl.Callback):
    """Counts training samples and the wall time spent inside training batches."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._start = 0.0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start the clock for this batch."""
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Add this batch's time and samples."""
        self.seconds += time.perf_counter() - self._start
        self.samples += int(batch["labels"].shape[0])

    @property
    def samples_per_second(self) -> float:
        """Training samples per second inside training steps (0 before any step)."""
        return self.samples / self.seconds if self.seconds else 0.0
