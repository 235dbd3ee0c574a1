"""Shared simulator plumbing: class counts, shard ranges and argument checks (simulate/common.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from e2evision.simulate.common import (
    check_int,
    check_seed,
    check_shard,
    class_counts,
    shard_blocks,
    shard_range,
    shard_suffix,
)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_first_rule_is_row_i_holds_class_i_mod_k(k: int) -> None:
    for n in range(40):
        expected = [sum(1 for i in range(n) if i % k == c) for c in range(k)]
        assert class_counts(n, k) == expected


def test_last_rule_gives_the_remainder_to_the_last_classes() -> None:
    for n in range(40):
        assert class_counts(n, 2, remainder_to="last") == [n // 2, n - n // 2]
        counts = class_counts(n, 3, remainder_to="last")
        assert sum(counts) == n and counts == sorted(counts)
    assert class_counts(7, 3) == [3, 2, 2] and class_counts(7, 3, remainder_to="last") == [2, 2, 3]
    with pytest.raises(ValueError, match="remainder_to must be 'first' or 'last'"):
        class_counts(4, 2, remainder_to="middle")  # type: ignore[arg-type]


@pytest.mark.parametrize("block_size", [1, 3, 32])
@pytest.mark.parametrize("num_shards", [1, 2, 3, 7])
def test_shards_partition_the_items_along_block_edges(block_size: int, num_shards: int) -> None:
    for n in range(0, 100, 7):
        ranges = [shard_range(n, block_size, s, num_shards) for s in range(num_shards)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        for (_, stop), (start, _) in itertools.pairwise(ranges):
            assert stop == start  # contiguous, disjoint
        for start, stop in ranges[:-1]:
            assert start % block_size == 0 and (stop % block_size == 0 or stop == n)
        blocks = [shard_blocks(n, block_size, s, num_shards) for s in range(num_shards)]
        sizes = [len(b) for b in blocks]
        assert sum(sizes) == -(-n // block_size) and max(sizes) - min(sizes) <= 1


def test_shard_suffix_only_for_sharded_runs() -> None:
    assert shard_suffix(0, 1) == ""
    assert shard_suffix(1, 3) == "_shard1of3"


def test_checks_name_the_argument() -> None:
    check_int("n", np.int64(3), 3)
    with pytest.raises(ValueError, match="n must be an integer >= 3, got 2"):
        check_int("n", 2, 3)
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got True"):
        check_int("workers", True, 1)
    check_shard(np.int32(1), 2)
    with pytest.raises(ValueError, match=r"shard must be an integer in \[0, num_shards=2\), got 2"):
        check_shard(2, 2)
    assert check_seed(np.uint8(7)) == 7 and type(check_seed(np.uint8(7))) is int
    for bad in (-1, 1.0, np.bool_(True), "3"):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            check_seed(bad)
