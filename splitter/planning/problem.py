"""The planning problem as arrays: costs and memory of every (device, slice) at one batch size.

Every solver (networkx reference, exact search, brute force, baselines) reads costs from here,
so they all optimise the same numbers; ``evaluate`` is the one definition of a plan's cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from splitter.errors import SplitterError
from splitter.profile import Profile, SliceTimes

# A stage as the solvers see it: (device index, start, stop), slices [start, stop).
Stage = tuple[int, int, int]


@dataclass
class Problem:
    """Costs for one batch size over a chosen list of devices (indices into ``devices``)."""

    profile: Profile
    batch_size: int
    interpolated: bool
    headroom: float
    devices: list[str]
    max_stages: int
    prefix_ms: np.ndarray  # (D, L+1): prefix sums of median compute ms
    prefix_p90_ms: np.ndarray  # (D, L+1)
    activation: np.ndarray  # (D, L): peak activation bytes; inf where the slice never fits
    prefix_param: np.ndarray  # (L+1,): prefix sums of parameter bytes
    param_factor: np.ndarray  # (D,)
    overhead: np.ndarray  # (D,): runtime bytes
    usable: np.ndarray  # (D,): usable memory bytes
    transfer: np.ndarray  # (D, D, L+1): ms to move cut k from device d to e (inf on d == e)
    transfer_in: np.ndarray  # (D,): controller -> device, cut 0
    transfer_out: np.ndarray  # (D,): device -> controller, last cut
    reach: np.ndarray  # (D, L): largest stop b such that [a, b) fits on d (a: nothing fits)

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def n_slices(self) -> int:
        return self.prefix_param.shape[0] - 1

    def compute_ms(self, d: int, a: int, b: int) -> float:
        return float(self.prefix_ms[d, b] - self.prefix_ms[d, a])

    def memory_parts(self, d: int, a: int, b: int) -> tuple[float, float, float, float]:
        """(needed, activation, param, runtime) bytes of slices [a, b) on device d."""
        act = float(self.activation[d, a:b].max())
        param = float(self.prefix_param[b] - self.prefix_param[a])
        runtime = float(self.overhead[d])
        needed = (act + param * self.param_factor[d] + runtime) * (1.0 + self.headroom)
        return needed, act, param, runtime

    def fits(self, d: int, a: int, b: int) -> bool:
        return b <= self.reach[d, a]


def times_at_batch(times: dict[int, SliceTimes], batch: int) -> tuple[SliceTimes, bool]:
    """Measurements at ``batch``; linear interpolation between measured neighbours."""
    if batch in times:
        return times[batch], False
    sizes = sorted(times)
    lo = max(s for s in sizes if s < batch)
    hi = min(s for s in sizes if s > batch)
    w = (batch - lo) / (hi - lo)
    a, b = times[lo], times[hi]

    def mix(x: Sequence[float | None], y: Sequence[float | None]) -> tuple[float | None, ...]:
        return tuple(
            None if p is None or q is None else p + w * (q - p) for p, q in zip(x, y, strict=True)
        )

    acts = mix(a.peak_activation_bytes, b.peak_activation_bytes)
    return (
        SliceTimes(
            median_ms=mix(a.median_ms, b.median_ms),
            p90_ms=mix(a.p90_ms, b.p90_ms),
            peak_activation_bytes=tuple(None if v is None else round(v) for v in acts),
            fits=tuple(x and y for x, y in zip(a.fits, b.fits, strict=True)),
        ),
        True,
    )


def check_batch_size(profile: Profile, batch: int) -> None:
    lo, hi = profile.batch_sizes[0], profile.batch_sizes[-1]
    if batch < lo or batch > hi:
        raise SplitterError(
            f"batch size {batch} is outside the profiled sizes {list(profile.batch_sizes)} "
            f"in {profile.source}",
            f"choose --batch-size between {lo} and {hi}, or benchmark at batch size {batch}",
        )


def select_devices(
    profile: Profile, include: Sequence[str] | None, exclude: Sequence[str] | None
) -> list[str]:
    """Device names to plan over, in profile order; unknown names are an error."""
    known = [d.name for d in profile.devices]
    for option, names in (("--devices", include or []), ("--exclude", exclude or [])):
        for name in names:
            if name not in known:
                raise SplitterError(
                    f"{option} names device '{name}', which is not in {profile.source}",
                    f"use names from the profile: {', '.join(known)}",
                )
    chosen = [n for n in known if (not include or n in include) and n not in (exclude or [])]
    if not chosen:
        raise SplitterError(
            "--devices/--exclude leave no device to plan over", "keep at least one device"
        )
    return chosen


def build_problem(
    profile: Profile,
    batch_size: int,
    devices: Sequence[str] | None = None,
    headroom: float = 0.2,
    max_stages: int | None = None,
) -> Problem:
    """Arrays for ``batch_size`` over ``devices`` (default: all); memory model: formats.md."""
    check_batch_size(profile, batch_size)
    if headroom < 0:
        raise SplitterError(
            f"--memory-headroom {headroom} is negative", "use a fraction such as 0.2"
        )
    names = list(devices) if devices is not None else [d.name for d in profile.devices]
    devs = [profile.device(n) for n in names]
    L, D = profile.n_slices, len(devs)
    prefix_ms = np.zeros((D, L + 1))
    prefix_p90 = np.zeros((D, L + 1))
    activation = np.full((D, L), np.inf)
    interpolated = False
    for i, dev in enumerate(devs):
        times, interp = times_at_batch(dev.compute, batch_size)
        interpolated |= interp
        fits = np.array(times.fits, dtype=bool)
        med = np.array([m if m is not None else 0.0 for m in times.median_ms], dtype=float)
        p90 = np.array([m if m is not None else 0.0 for m in times.p90_ms], dtype=float)
        act = np.array(
            [a if a is not None else np.inf for a in times.peak_activation_bytes], dtype=float
        )
        med[~fits] = 0.0
        p90[~fits] = 0.0
        act[~fits] = np.inf
        prefix_ms[i, 1:] = np.cumsum(med)
        prefix_p90[i, 1:] = np.cumsum(p90)
        activation[i] = act
    prefix_param = np.zeros(L + 1)
    prefix_param[1:] = np.cumsum(np.array(profile.param_bytes, dtype=float))
    factor = np.array([d.param_factor for d in devs])
    overhead = np.array([float(d.runtime_overhead_bytes) for d in devs])
    usable = np.array([float(d.usable_memory_bytes) for d in devs])

    cut_bytes = np.array([c.bytes_per_sample for c in profile.cuts], dtype=float) * batch_size
    # A hop costs the link (latency + bytes / bandwidth) plus the runtime's CPU work on each
    # end: half of the sender's and half of the receiver's measured per-message cost.
    transfer = np.full((D, D, L + 1), np.inf)
    for i, a in enumerate(devs):
        for j, b in enumerate(devs):
            if i != j:
                link = profile.links[(a.name, b.name)]
                transfer[i, j] = link.latency_ms + cut_bytes / link.bandwidth_bytes_per_s * 1000.0
                transfer[i, j] += (a.messaging.ms(cut_bytes) + b.messaging.ms(cut_bytes)) / 2
    ctl, ctl_msg = profile.controller, profile.controller_messaging
    first, last = cut_bytes[0], cut_bytes[-1]
    transfer_in = np.array(
        [profile.links[(ctl, d.name)].transfer_ms(first)
         + (ctl_msg.ms(first) + d.messaging.ms(first)) / 2 for d in devs]
    )  # fmt: skip
    transfer_out = np.array(
        [profile.links[(d.name, ctl)].transfer_ms(last)
         + (ctl_msg.ms(last) + d.messaging.ms(last)) / 2 for d in devs]
    )  # fmt: skip

    reach = _reach(activation, prefix_param, factor, overhead, usable, headroom)
    limit = D if max_stages is None else min(max_stages, D)
    if limit < 1:
        raise SplitterError(f"--max-stages {max_stages} is below 1", "use --max-stages 1 or more")
    return Problem(
        profile=profile,
        batch_size=batch_size,
        interpolated=interpolated,
        headroom=headroom,
        devices=names,
        max_stages=limit,
        prefix_ms=prefix_ms,
        prefix_p90_ms=prefix_p90,
        activation=activation,
        prefix_param=prefix_param,
        param_factor=factor,
        overhead=overhead,
        usable=usable,
        transfer=transfer,
        transfer_in=transfer_in,
        transfer_out=transfer_out,
        reach=reach,
    )


def _reach(
    activation: np.ndarray,
    prefix_param: np.ndarray,
    factor: np.ndarray,
    overhead: np.ndarray,
    usable: np.ndarray,
    headroom: float,
) -> np.ndarray:
    """reach[d, a] = largest b with [a, b) within d's memory (memory only grows with b)."""
    D, L = activation.shape
    reach = np.arange(L)[None, :].repeat(D, axis=0)
    budget = usable / (1.0 + headroom) - overhead  # bytes left for activations + params
    for a in range(L):
        peak = np.maximum.accumulate(activation[:, a:], axis=1)  # (D, L - a)
        need = peak + factor[:, None] * (prefix_param[None, a + 1 :] - prefix_param[a])
        ok = need <= budget[:, None]
        # ok is a prefix of True along b; its length is how far the range can reach
        reach[:, a] = a + np.where(ok.all(axis=1), L - a, ok.argmin(axis=1))
    return reach


def evaluate(problem: Problem, stages: Sequence[Stage]) -> tuple[float, float]:
    """(latency_ms, bottleneck_ms) of a plan; the single definition every solver agrees with.

    Sums in path order (controller in, compute, link, compute, ..., controller out), the same
    order the searches accumulate in, so equal plans give bit-equal costs.
    """
    d0 = stages[0][0]
    latency = float(problem.transfer_in[d0])
    bottleneck = latency
    prev = None
    for d, a, b in stages:
        if prev is not None:
            t = float(problem.transfer[prev, d, a])
            latency = latency + t
            bottleneck = max(bottleneck, t)
        c = problem.compute_ms(d, a, b)
        latency = latency + c
        bottleneck = max(bottleneck, c)
        prev = d
    t = float(problem.transfer_out[prev])
    return latency + t, max(bottleneck, t)


def is_valid(problem: Problem, stages: Sequence[Stage]) -> bool:
    """Contiguous cover of all slices, each device at most once, memory respected."""
    if not stages or len(stages) > problem.max_stages:
        return False
    if stages[0][1] != 0 or stages[-1][2] != problem.n_slices:
        return False
    devices = [s[0] for s in stages]
    if len(set(devices)) != len(devices):
        return False
    for (_, _, b), (_, a, _) in pairwise(stages):
        if a != b:
            return False
    return all(a < b and problem.fits(d, a, b) for d, a, b in stages)
