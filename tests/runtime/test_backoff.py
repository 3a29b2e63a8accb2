"""The backoff module: every delay inside its policy's bounds, growth, determinism, validation."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from strategies import (
    attempts,
    backoff_policies,
    huge_attempts,
    previous_delays,
    seeds,
)

from daz_actors import BackoffPolicy, Jitter


def expected_base(policy: BackoffPolicy, attempt: int) -> float:
    """The documented base delay, computed independently (in log space where it would overflow)."""
    if policy.initial == 0:
        return 0.0
    log_value = math.log(policy.initial) + attempt * math.log(policy.multiplier)
    if log_value > math.log(policy.max_delay) + 1e-9:
        return policy.max_delay
    return min(policy.max_delay, policy.initial * float(policy.multiplier) ** attempt)


def documented_bounds(
    policy: BackoffPolicy, attempt: int, previous: float | None
) -> tuple[float, float]:
    """The interval the module docstring promises for each jitter mode."""
    base = expected_base(policy, attempt)
    if policy.jitter is Jitter.NONE:
        return base, base
    if policy.jitter is Jitter.PROPORTIONAL:
        ratio = policy.jitter_ratio
        return base * (1 - ratio), min(policy.max_delay, base * (1 + ratio))
    if policy.jitter is Jitter.FULL:
        return 0.0, base
    prev = policy.initial if previous is None else max(previous, policy.initial)
    return policy.initial, min(policy.max_delay, 3 * prev)


@given(policy=backoff_policies(), attempt=attempts, seed=seeds, previous=previous_delays)
def test_every_delay_is_inside_the_policy_bounds(
    policy: BackoffPolicy, attempt: int, seed: int, previous: float | None
) -> None:
    """A delay lies in `bounds()`, is never negative and never above `max_delay`."""
    delay = policy.delay(attempt, rng=random.Random(seed), previous=previous)
    low, high = policy.bounds(attempt, previous)
    assert 0 <= low <= delay <= high <= policy.max_delay


@given(policy=backoff_policies(), attempt=attempts, seed=seeds, previous=previous_delays)
def test_every_delay_is_inside_its_modes_documented_bounds(
    policy: BackoffPolicy, attempt: int, seed: int, previous: float | None
) -> None:
    """none is the base, proportional base*(1±ratio) capped, full [0, base], decorrelated
    [initial, min(cap, 3*previous)]."""
    delay = policy.delay(attempt, rng=random.Random(seed), previous=previous)
    low, high = documented_bounds(policy, attempt, previous)
    tolerance = 1e-9 * max(1.0, high)
    assert low - tolerance <= delay <= high + tolerance
    if policy.jitter is Jitter.NONE:
        assert delay == pytest.approx(expected_base(policy, attempt), rel=1e-9)


@given(policy=backoff_policies(), attempt=attempts)
def test_base_delay_follows_the_formula(policy: BackoffPolicy, attempt: int) -> None:
    """`base_delay` is min(max_delay, initial * multiplier**attempt)."""
    assert policy.base_delay(attempt) == pytest.approx(expected_base(policy, attempt), rel=1e-9)


@given(policy=backoff_policies(), attempt=attempts)
def test_base_delay_is_non_decreasing_in_attempt(policy: BackoffPolicy, attempt: int) -> None:
    """The next attempt's base delay is never shorter than this one's."""
    assert policy.base_delay(attempt) <= policy.base_delay(attempt + 1)


@given(policy=backoff_policies(jitter=Jitter.NONE), seed=seeds)
def test_delay_without_jitter_is_non_decreasing(policy: BackoffPolicy, seed: int) -> None:
    """With jitter ``none`` the delays of attempts 0, 1, 2, ... never go down."""
    rng = random.Random(seed)
    delays = [policy.delay(a, rng=rng) for a in range(60)]
    assert delays == sorted(delays)
    assert delays[-1] <= policy.max_delay


@given(policy=backoff_policies(jitter=Jitter.PROPORTIONAL), attempt=attempts)
def test_proportional_expectation_is_non_decreasing(policy: BackoffPolicy, attempt: int) -> None:
    """The expected proportional delay (the midpoint of its uniform range) never goes down,
    and equals the base delay until the cap cuts the range."""

    def expectation(a: int) -> float:
        low, high = policy.bounds(a)
        return (low + high) / 2

    assert expectation(attempt) <= expectation(attempt + 1) + 1e-12 * policy.max_delay
    base = policy.base_delay(attempt)
    if base * (1 + policy.jitter_ratio) <= policy.max_delay:
        assert expectation(attempt) == pytest.approx(base, rel=1e-12, abs=1e-12)


def test_proportional_sample_means_grow_with_attempt() -> None:
    """Over many seeded samples the mean proportional delay tracks its expectation and grows."""
    policy = BackoffPolicy(initial=1.0, multiplier=2.0, max_delay=100.0, jitter_ratio=0.25)
    rng = random.Random(1234)
    n = 4000
    means = []
    for attempt in range(9):
        samples = [policy.delay(attempt, rng=rng) for _ in range(n)]
        low, high = policy.bounds(attempt)
        spread = (high - low) / math.sqrt(12)  # standard deviation of a uniform
        assert statistics.fmean(samples) == pytest.approx((low + high) / 2, abs=5 * spread / n**0.5)
        assert low <= min(samples)
        assert max(samples) <= high
        means.append(statistics.fmean(samples))
    assert means == sorted(means)
    assert means[0] == pytest.approx(1.0, rel=0.02)  # uncapped: the mean is the base
    assert means[-1] == pytest.approx((75.0 + 100.0) / 2, rel=0.02)  # capped at 100


@given(policy=backoff_policies(), seed=seeds)
def test_same_seed_gives_the_same_sequence(policy: BackoffPolicy, seed: int) -> None:
    """Two runs with equally seeded random sources give identical delays."""

    def run() -> list[float]:
        rng = random.Random(seed)
        previous = None
        out = []
        for attempt in range(12):
            previous = policy.delay(attempt, rng=rng, previous=previous)
            out.append(previous)
        return out

    assert run() == run()


@given(policy=backoff_policies(jitter=Jitter.DECORRELATED), seed=seeds)
def test_decorrelated_chain_stays_within_three_times_the_previous(
    policy: BackoffPolicy, seed: int
) -> None:
    """Feeding each decorrelated delay back as `previous` keeps every step in
    [initial, min(cap, 3 * previous)]."""
    rng = random.Random(seed)
    previous: float | None = None
    for attempt in range(30):
        delay = policy.delay(attempt, rng=rng, previous=previous)
        ceiling = min(policy.max_delay, 3 * (policy.initial if previous is None else previous))
        assert policy.initial <= delay <= max(ceiling, policy.initial)
        previous = delay


@given(policy=backoff_policies(), attempt=huge_attempts, seed=seeds)
@example(
    policy=BackoffPolicy(initial=1, multiplier=2, max_delay=30, jitter=Jitter.NONE),
    attempt=10**18,
    seed=0,
)
@example(
    policy=BackoffPolicy(initial=0.0, multiplier=2.0, max_delay=30.0, jitter=Jitter.NONE),
    attempt=5000,
    seed=0,
)
def test_huge_attempt_numbers_do_not_overflow(
    policy: BackoffPolicy, attempt: int, seed: int
) -> None:
    """An absurd attempt number gives the capped delay, without OverflowError (and without
    giant integer arithmetic: 2 ** 10**18 would never finish, and the per-test timeout
    would fail the test)."""
    base = policy.base_delay(attempt)
    delay = policy.delay(attempt, rng=random.Random(seed))
    assert base == expected_base(policy, attempt)
    if policy.initial == 0:
        assert base == 0.0  # zero stays zero however large the power
    elif policy.multiplier == 1:
        assert base == policy.initial
    assert base <= policy.max_delay  # (a multiplier a hair above 1 may stay below the cap)
    assert 0 <= delay <= policy.max_delay


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": -1.0}, "initial must be a finite number >= 0"),
        ({"initial": math.nan}, "initial must be a finite number >= 0"),
        ({"max_delay": -0.5, "initial": 0.0}, "max_delay must be a finite number >= 0"),
        ({"max_delay": math.inf}, "max_delay must be a finite number >= 0"),
        ({"multiplier": 0.5}, "multiplier must be a finite number >= 1"),
        ({"multiplier": math.inf}, "multiplier must be a finite number >= 1"),
        ({"multiplier": True}, "multiplier must be a finite number >= 1"),
        ({"initial": 10.0, "max_delay": 5.0}, r"max_delay \(5\) must not be below initial \(10\)"),
        ({"jitter_ratio": -0.1}, "jitter_ratio must be between 0 and 1"),
        ({"jitter_ratio": 1.5}, "jitter_ratio must be between 0 and 1"),
        ({"jitter_ratio": math.nan}, "jitter_ratio must be between 0 and 1"),
        ({"jitter": "none"}, "jitter must be a Jitter"),
    ],
)
def test_invalid_policies_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    """Each invalid policy parameter is refused with a ValueError naming it."""
    with pytest.raises(ValueError, match=message):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]


@given(policy=backoff_policies(), attempt=st.integers(max_value=-1))
def test_negative_attempt_raises(policy: BackoffPolicy, attempt: int) -> None:
    """Attempts are counted from 0; a negative one is a bug in the caller."""
    with pytest.raises(ValueError, match="attempt must be >= 0"):
        policy.delay(attempt, rng=random.Random(0))


def test_design_example_doubles_from_sixty_up_to_the_cap() -> None:
    """DESIGN section 4: initial 60, multiplier 2 gives 60, 120, 240, 480, ... capped."""
    policy = BackoffPolicy(initial=60, multiplier=2.0, max_delay=3600, jitter=Jitter.NONE)
    assert [policy.delay(a) for a in range(8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    capped = BackoffPolicy(initial=60, multiplier=2.0, max_delay=300, jitter=Jitter.NONE)
    assert [capped.delay(a) for a in range(5)] == [60, 120, 240, 300, 300]


def test_default_policy_is_proportional_quarter_jitter() -> None:
    """The default policy spreads the base delay by ±25%, as DESIGN section 4 says."""
    policy = BackoffPolicy()
    assert policy.jitter is Jitter.PROPORTIONAL
    assert policy.bounds(0) == pytest.approx((0.075, 0.125))


def test_delay_never_leaves_the_bounds_even_if_uniform_overshoots() -> None:
    """A random source that rounds past an end of the range is clamped back inside it."""

    class Overshooting(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b + 1.0 if self.random() < 0.5 else a - 1.0

    policy = BackoffPolicy(initial=1.0, multiplier=2.0, max_delay=8.0, jitter=Jitter.FULL)
    rng = Overshooting(0)
    delays = {policy.delay(5, rng=rng) for _ in range(50)}
    assert delays == {0.0, 8.0}


@given(policy=backoff_policies(), attempt=attempts, previous=previous_delays)
def test_zero_width_bounds_return_the_value_without_randomness(
    policy: BackoffPolicy, attempt: int, previous: float | None
) -> None:
    """When a mode's range is a single point no random number is drawn."""
    low, high = policy.bounds(attempt, previous)
    assume(low == high)

    class NoRandom(random.Random):
        def random(self) -> float:
            raise AssertionError("drew a random number for a fixed delay")

    assert policy.delay(attempt, rng=NoRandom(), previous=previous) == low
