"""Where a search's evaluations run: inline, in a pool of worker processes, or as cluster jobs.

Every executor hands out :class:`concurrent.futures.Future` objects, so the search loop is the
same for all of them and no scheduling is written here:

- ``inline``: evaluated in the search process when submitted (the sequential, paper-faithful mode).
- ``process``: a :class:`~concurrent.futures.ProcessPoolExecutor` (``spawn``) of ``workers``
  processes. Each has its own CUDA context; on a machine with several GPUs worker ``i`` is pinned to
  GPU ``i mod n`` (``CUDA_VISIBLE_DEVICES``), so there is one pool slice per GPU. Workers die with the
  search process (Linux ``PR_SET_PDEATHSIG``): a killed search leaves no orphan training behind that
  could write into an evaluation directory the resumed search reuses.
- ``thread``: a :class:`~concurrent.futures.ThreadPoolExecutor` of ``workers`` threads in the
  search process, for objectives that wait rather than compute (a remote trainer, a replayed
  table with simulated durations); nothing is pickled.
- ``submitit``: each evaluation is a job of submitit's ``AutoExecutor`` (SLURM on a cluster, local
  processes elsewhere); a thread per running job waits on it, giving a Future like the others.

The number of workers can be ``auto``: on GPUs, as many per GPU as fit in its free memory at
``worker_memory_gb`` each (at most ``max_workers_per_gpu``); without a GPU, one (training already
uses every core, so concurrent evaluations would only compete for them).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autopeft.errors import ConfigError, allowed_list, check_known_keys

log = logging.getLogger("autopeft.search")

#: Kinds of executor.
EXECUTORS = ("inline", "process", "submitit", "thread")

#: Keys of the ``search.parallel`` node.
PARALLEL_KEYS = ("workers", "executor", "prefetch", "worker_memory_gb", "max_workers_per_gpu", "submitit")


@dataclass(frozen=True)
class ParallelSettings:
    """Validated ``search.parallel`` node.

    Attributes:
        workers: Evaluations running at once (``auto`` is resolved by :func:`resolve_workers`).
        executor: ``inline``, ``process`` or ``submitit``.
        prefetch: Proposals kept queued beyond the running ones, so a worker that finishes starts
            its next evaluation at once while the surrogate is refitted (pipelined BO).
        worker_memory_gb: GPU memory one evaluation needs, for ``workers: auto``.
        max_workers_per_gpu: Upper bound of ``auto`` per GPU.
        submitit: Keyword arguments of ``submitit.AutoExecutor.update_parameters`` (plus ``folder``).

    """

    workers: int | str = 1
    executor: str = "process"
    prefetch: int = 1
    worker_memory_gb: float = 6.0
    max_workers_per_gpu: int = 8
    submitit: Mapping[str, Any] | None = None

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> ParallelSettings:
        """Validate the node; errors name the bad value and what is allowed."""
        values = dict(values or {})
        check_known_keys(values, PARALLEL_KEYS, "search.parallel")
        settings = cls(**values)
        workers = settings.workers
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"search.parallel.workers={workers!r} must be 'auto' or an integer >= 1")
        if settings.executor not in EXECUTORS:
            raise ConfigError(f"search.parallel.executor={settings.executor!r}; allowed: {allowed_list(EXECUTORS)}")
        if isinstance(settings.prefetch, bool) or not isinstance(settings.prefetch, int) or settings.prefetch < 0:
            raise ConfigError(f"search.parallel.prefetch={settings.prefetch!r} must be an integer >= 0")
        if not float(settings.worker_memory_gb) > 0:
            raise ConfigError(f"search.parallel.worker_memory_gb={settings.worker_memory_gb!r} must be > 0")
        if int(settings.max_workers_per_gpu) < 1:
            raise ConfigError(f"search.parallel.max_workers_per_gpu={settings.max_workers_per_gpu!r} must be >= 1")
        return settings


def gpu_free_memory_gb() -> list[float]:
    """Free memory of every visible GPU in GiB (empty without CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.mem_get_info(i)[0] / 2**30 for i in range(torch.cuda.device_count())]


def resolve_workers(settings: ParallelSettings, free_gb: list[float] | None = None) -> int:
    """The number of concurrent evaluations: the configured one, or ``auto`` from GPU memory."""
    if settings.workers != "auto":
        return int(settings.workers)
    free_gb = gpu_free_memory_gb() if free_gb is None else free_gb
    if not free_gb:
        return 1
    per_gpu = [max(1, min(settings.max_workers_per_gpu, int(gb // settings.worker_memory_gb))) for gb in free_gb]
    return sum(per_gpu)


class InlineExecutor(cf.Executor):
    """Runs each call when it is submitted; its Future is already done (the sequential mode)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:  # noqa: D102
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            future.set_exception(err)
        return future


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the search process dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _init_worker(gpu_queue: Any, threads: int) -> None:
    """Worker start-up: die with the parent, take a GPU when there are several, share the CPU cores."""
    _die_with_parent()
    import torch

    # Each process would otherwise start one thread per core: N workers would run N x cores threads.
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())
    # Quiet the same library chatter the search process silences.
    from autopeft.runtime import quiet_libraries

    quiet_libraries()


class _SubmititExecutor(cf.Executor):
    """submitit jobs behind the Executor interface: one waiting thread per running job."""

    def __init__(self, workers: int, options: Mapping[str, Any]) -> None:
        import submitit

        options = dict(options)
        folder = options.pop("folder", "submitit")
        cluster = options.pop("cluster", None)  # None: SLURM when available, else local processes
        self._submitit = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        if options:
            self._submitit.update_parameters(**options)
        self._threads = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="submitit-wait")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        job = self._submitit.submit(fn, *args, **kwargs)
        log.info("submitted evaluation as job %s", job.job_id)
        return self._threads.submit(job.result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)


def make_executor(settings: ParallelSettings, workers: int) -> cf.Executor:
    """The executor for ``workers`` concurrent evaluations (``inline`` whenever ``workers`` is 1)."""
    if workers == 1 or settings.executor == "inline":
        return InlineExecutor()
    if settings.executor == "submitit":
        return _SubmititExecutor(workers, settings.submitit or {})
    if settings.executor == "thread":
        return cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluate")
    context = multiprocessing.get_context("spawn")  # fork would copy the parent's CUDA and thread state
    gpus = len(gpu_free_memory_gb())
    gpu_queue = None
    if gpus > 1:
        gpu_queue = context.Queue()
        for i in range(workers):
            gpu_queue.put(i % gpus)
    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(gpu_queue, max(1, (os.cpu_count() or 1) // workers)),
    )
