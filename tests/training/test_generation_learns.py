"""A tiny decoder learns a generation task through the real training path, and not with the loss reversed.

The task is the synthetic ``reverse`` task (:mod:`autopeft.tasks.synthetic`) made easier for a
CPU: 2 to 4 of 8 letters, 2,400 distinct training strings, 100 unseen test strings. A random
``tiny_llama`` (2 layers, D_h 64) is fully fine-tuned for 3 epochs (450 steps of 16) at lr 3e-3
through :func:`~autopeft.training.train.train_and_evaluate`, the entry every mode uses. Untrained,
it writes none of the test answers (its frozen self is scored with ``peft=head_only``, which
trains nothing on a generation task); trained, it reverses the unseen strings (exact match 0.99
to 1.0 with seeds 0 to 3; the jump comes after 150 to 250 steps, hence 450); trained with the
loss's sign flipped (the answers made *unlikely*), it reverses none.

The model is tiny: its matrix products are too small for a second intra-op thread to pay for the
synchronisation, which on a busy 2-core machine made each step 5 times slower. The tests run
single-threaded (the ``one_thread`` fixture), about 5 s per training on the 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from autopeft.training.module import PeftLightningModule
from autopeft.training.train import TrainingJob, train_and_evaluate

#: The reverse task on short strings, a tiny llama fully fine-tuned for 200 steps.
LEARN = [
    "experiment=none",
    "debug=smoke",
    "backbone=tiny_llama",
    "task=reverse",
    "task.synthetic.min_length=2",
    "task.synthetic.max_length=4",
    "task.synthetic.train_size=2400",
    "task.synthetic.validation_size=64",
    "task.synthetic.test_size=100",
    "data.max_train_samples=null",
    "data.max_eval_samples=null",
    "trainer.lr=3e-3",
    "trainer.batch_size=16",
    "trainer.eval_batch_size=64",
    "fidelity.epochs=3",
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread (see the module docstring), then restore the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_an_untrained_decoder_writes_no_answer(compose_cfg: Callable, tmp_path: Path) -> None:
    record = train_and_evaluate(TrainingJob.from_config(compose_cfg(*LEARN, "peft=head_only")), tmp_path)
    assert record["status"] == "ok" and record["params"]["trainable_params"] == 0
    assert record["metrics"]["test"]["exact_match"] <= 0.05
    print(f"untrained: test {record['metrics']['test']}")


@pytest.mark.slow  # two 5 s trainings: .ci/run runs it after the default suite
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["loss", "loss_sign_flipped"])
def test_a_tiny_decoder_learns_to_reverse_strings(
    compose_cfg: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sign: float
) -> None:
    loss = PeftLightningModule.generation_loss
    monkeypatch.setattr(PeftLightningModule, "generation_loss", lambda self, batch: sign * loss(self, batch))
    started = time.perf_counter()
    record = train_and_evaluate(TrainingJob.from_config(compose_cfg(*LEARN, "peft=fft")), tmp_path)
    seconds = time.perf_counter() - started
    if sign > 0:
        assert record["status"] == "ok", record.get("reason")
        assert record["metrics"]["test"]["exact_match"] >= 0.5, record["metrics"]
    else:
        # Pushing the answers' likelihood down may also blow the loss up to a non-finite value.
        assert record["status"] == "diverged" or record["metrics"]["test"]["exact_match"] <= 0.05, record["metrics"]
    print(f"sign {sign:+.0f}: {record['status']}, test {record.get('metrics', {}).get('test')}, {seconds:.1f}s")
