"""Every placement enumerated, costed straight from the profile: the ground truth for tests.

Deliberately independent of the solvers' arrays: compute times are summed slice by slice, the
memory model is written out again from docs/formats.md, links are looked up by name. Only for
small cases (the count grows like C(L-1, n-1) · D!/(D-n)!).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import combinations, permutations

from splitter.planning.problem import times_at_batch
from splitter.profile import Profile

# (device name, start, stop)
NamedStage = tuple[str, int, int]


def all_placements(
    n_slices: int, devices: Sequence[str], max_stages: int
) -> Iterator[list[NamedStage]]:
    """Every split of [0, n_slices) into contiguous ranges on distinct devices."""
    for n in range(1, min(max_stages, len(devices), n_slices) + 1):
        for cuts in combinations(range(1, n_slices), n - 1):
            bounds = (0, *cuts, n_slices)
            for devs in permutations(devices, n):
                yield [(devs[i], bounds[i], bounds[i + 1]) for i in range(n)]


def placement_cost(
    profile: Profile, batch: int, headroom: float, stages: Sequence[NamedStage]
) -> tuple[float, float] | None:
    """(latency_ms, bottleneck_ms), or None when a stage breaks the memory rule."""
    terms: list[float] = []
    hops = [profile.controller, *(s[0] for s in stages), profile.controller]
    cut_at = [0, *(s[2] for s in stages)]
    for i, (name, a, b) in enumerate(stages):
        dev = profile.device(name)
        times, _ = times_at_batch(dev.compute, batch)
        if not all(times.fits[s] for s in range(a, b)):
            return None
        act = max(times.peak_activation_bytes[s] for s in range(a, b))
        params = sum(profile.param_bytes[a:b])
        need = (act + params * dev.param_factor + dev.runtime_overhead_bytes) * (1 + headroom)
        if need > dev.usable_memory_bytes:
            return None
        link = profile.links[(hops[i], hops[i + 1])]
        terms.append(link.transfer_ms(profile.cuts[cut_at[i]].bytes_per_sample * batch))
        terms.append(sum(times.median_ms[s] for s in range(a, b)))
    last = profile.links[(hops[-2], hops[-1])]
    terms.append(last.transfer_ms(profile.cuts[-1].bytes_per_sample * batch))
    return sum(terms), max(terms)


def brute_force(
    profile: Profile,
    batch: int,
    devices: Sequence[str],
    max_stages: int,
    headroom: float,
) -> list[tuple[float, float, list[NamedStage]]]:
    """Every valid placement with its (latency, bottleneck)."""
    out = []
    for stages in all_placements(profile.n_slices, devices, max_stages):
        cost = placement_cost(profile, batch, headroom, stages)
        if cost is not None:
            out.append((cost[0], cost[1], stages))
    return out
