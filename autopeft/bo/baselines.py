"""Model-free searchers that know the exact parameter count: the rules BO has to beat.

Both start from the same random initial design as BO and random search (same seed, same
``n_init``: :func:`autopeft.bo.searchers.initial_design`), so that a benchmark compares what
each rule does *after* the design, on paired seeds.

- :class:`CheapestFirstSearcher` then evaluates the unseen configurations in ascending order of
  trainable parameters. On a front of score vs. % params the cheapest configurations are the
  ones most likely to be non-dominated, so this rule fills the low-parameter end of the front
  with no score model at all.
- :class:`StratifiedRandomSearcher` then draws at random, but spreads the draws evenly over
  ``bins`` equal-width bins of log10 % params, cycling through the bins in a seeded order,
  so that the cheap decades of the front get as many evaluations as the expensive ones
  (uniform sampling of the space puts most draws at a few % params).

Both are pure functions of the history and the seed, like every searcher, so they resume.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from autopeft.bo.local_search import SpaceExhaustedError
from autopeft.bo.objectives import smallest_positive_param_count
from autopeft.bo.searchers import History, Proposal, design_proposals, step_rng
from autopeft.space import Point, SearchSpace


def ascending_configurations(space: SearchSpace) -> Iterator[Point]:
    """Every distinct configuration of ``space``, lazily, in :meth:`SearchSpace.enumeration_key` order.

    The same order as :meth:`SearchSpace.enumerate_configurations`, without building the whole
    space (BERT-base's layer-selection space has millions of points). The parameter count never
    decreases when a size moves one choice up or a layer is switched on, so a best-first walk of
    that lattice from the all-off point pops configurations in ascending count (Dijkstra's
    argument); only the frontier of the walk is kept.
    """
    sizes = [len(options) for _, options in space.choices]
    bits = space.mask_dims

    def key(state: tuple[tuple[int, ...], tuple[bool, ...]]) -> tuple:
        return space.enumeration_key(space.canonical(space.from_indices(state[1], state[0])))

    start = (tuple(0 for _ in sizes), tuple(False for _ in range(bits)))
    frontier = [(key(start), start)]
    queued = {start}
    emitted: set[Point] = set()
    while frontier:
        _, state = heapq.heappop(frontier)
        point = space.canonical(space.from_indices(state[1], state[0]))
        if point not in emitted:
            emitted.add(point)
            yield point
        indices, mask = state
        successors = [
            ((*indices[:i], indices[i] + 1, *indices[i + 1 :]), mask)
            for i in range(len(sizes))
            if indices[i] + 1 < sizes[i]
        ]
        successors += [(indices, (*mask[:j], True, *mask[j + 1 :])) for j in range(bits) if not mask[j]]
        for successor in successors:
            if successor not in queued:
                queued.add(successor)
                heapq.heappush(frontier, (key(successor), successor))


@dataclass
class CheapestFirstSearcher:
    """The shared initial design, then the unseen configurations with the fewest parameters first.

    Attributes:
        space: The search space.
        seed: Seeds the initial design.
        n_init: Size of the initial design (the same configurations as BO's).
        candidates: Restrict the search to these configurations (tabulated benchmarks).

    """

    space: SearchSpace
    seed: int
    n_init: int = 0
    candidates: Sequence[Point] | None = None
    name: str = "cheapest"

    def propose(self, history: History, n: int) -> list[Proposal]:
        """The design while it lasts, then the ``n`` cheapest configurations not yet seen."""
        step = len(history.proposals)
        if step < self.n_init:
            return design_proposals(self.space, self.seed, self.n_init, self.candidates, step, n)
        seen = history.seen(self.space)
        if self.candidates is None:
            order: Iterator[Point] = ascending_configurations(self.space)
        else:
            unique = {self.space.canonical(p) for p in self.candidates}
            order = iter(sorted(unique, key=self.space.enumeration_key))
        points = []
        for point in order:
            if point not in seen:
                points.append(point)
                if len(points) == n:
                    break
        if not points:
            raise SpaceExhaustedError(f"every configuration of space {self.space.name!r} is proposed")
        return [Proposal(p, {"phase": "cheapest"}) for p in points]


@dataclass
class StratifiedRandomSearcher:
    """The shared initial design, then random draws spread evenly over bins of log10 % params.

    The bins split ``[log10 min %, log10 max %]`` into ``bins`` equal parts, from the space's
    cheapest non-empty configuration to its largest (the head-only configuration, 0%, counts in
    the first bin).
    Proposal ``k`` after the design targets bin ``order[k % bins]`` of a seeded permutation and
    takes a uniformly random unseen configuration in it (rejection sampling from the space, or a
    draw from the candidates in the bin); when the bin has nothing left to offer it takes the
    unseen draw nearest to the bin.

    Attributes:
        space: The search space.
        backbone_params: Denominator of % params.
        seed: Seeds the design, the bin order and the draws.
        n_init: Size of the initial design.
        candidates: Restrict the search to these configurations.
        bins: Number of log-scale bins.
        max_tries: Random draws per proposal when searching the space for a bin member.

    """

    space: SearchSpace
    backbone_params: int
    seed: int
    n_init: int = 0
    candidates: Sequence[Point] | None = None
    bins: int = 10
    max_tries: int = 2000
    name: str = "stratified"

    def __post_init__(self) -> None:
        counts = self._cheapest_and_largest()
        self.low = math.log10(100.0 * counts[0] / self.backbone_params)
        self.high = math.log10(100.0 * counts[1] / self.backbone_params)
        self.order = list(range(self.bins))
        random.Random(f"stratified-bins:{self.seed}").shuffle(self.order)

    def _cheapest_and_largest(self) -> tuple[int, int]:
        largest = self.space.from_indices(
            [True] * self.space.mask_dims, [len(options) - 1 for _, options in self.space.choices]
        )
        return smallest_positive_param_count(self.space), self.space.param_count(largest)

    def bin_of(self, point: Point) -> int:
        """Index of the log10 % params bin ``point`` falls in (head-only: bin 0)."""
        percent = 100.0 * self.space.param_count(point) / self.backbone_params
        position = (math.log10(max(percent, 10**self.low)) - self.low) / (self.high - self.low)
        return min(self.bins - 1, max(0, int(position * self.bins)))

    def propose(self, history: History, n: int) -> list[Proposal]:
        """The design while it lasts, then one bin-targeted random draw per proposal."""
        step = len(history.proposals)
        if step < self.n_init:
            return design_proposals(self.space, self.seed, self.n_init, self.candidates, step, n)
        seen = history.seen(self.space)
        proposals = []
        for k in range(n):
            target = self.order[(step + k - self.n_init) % self.bins]
            point = self._draw(target, seen, step_rng(self.seed, step + k, self.name))
            seen.add(self.space.canonical(point))
            proposals.append(Proposal(point, {"phase": "stratified", "bin": target}))
        return proposals

    def _draw(self, target: int, seen: set[Point], rng: random.Random) -> Point:
        if self.candidates is None:
            pool = [self.space.canonical(p) for p in self.space.sample(rng, self.max_tries)]
        else:
            pool = [self.space.canonical(p) for p in self.candidates]
            rng.shuffle(pool)
        pool = [p for p in pool if p not in seen]
        if not pool:
            raise SpaceExhaustedError(f"no unseen configuration of space {self.space.name!r} found")
        in_bin = [p for p in pool if self.bin_of(p) == target]
        if in_bin:
            return in_bin[0]
        return min(pool, key=lambda p: abs(self.bin_of(p) - target))
