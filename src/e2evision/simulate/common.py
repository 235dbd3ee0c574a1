"""Plumbing shared by the three simulators: argument checks, class counts and shard ranges.

Every simulator splits a data set of ``n`` items over its classes, cuts each class into
independent random blocks, and lets a shard write a contiguous, block-aligned share of those
blocks. These helpers hold the arithmetic once, so the e/gamma, jet and lensing writers agree on
what a shard holds and name their files alike.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "check_int",
    "check_seed",
    "check_shard",
    "class_counts",
    "shard_blocks",
    "shard_range",
    "shard_suffix",
]


def check_int(name: str, value: object, low: int) -> None:
    """Reject anything but an integer >= ``low`` (``bool`` included), naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_shard(shard: object, num_shards: object) -> None:
    """Reject a shard index outside ``[0, num_shards)`` (call after checking ``num_shards``)."""
    bad_type = isinstance(shard, bool) or not isinstance(shard, (int, np.integer))
    if bad_type or not 0 <= int(shard) < int(num_shards):  # type: ignore[call-overload]
        raise ValueError(f"shard must be an integer in [0, num_shards={num_shards}), got {shard!r}")


def check_seed(seed: object) -> int:
    """The seed as a plain ``int``; it is stored in the files, so only integers >= 0 pass."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (it is stored in the files), got {seed!r}")
    return int(seed)


def class_counts(n: int, k: int, *, remainder_to: Literal["first", "last"] = "first") -> list[int]:
    """Split ``n`` items over ``k`` classes as evenly as possible, by class index.

    ``remainder_to="first"``: the first ``n % k`` classes get one item more; this is the same as
    "row i holds class i % k" (class c has ceil((n - c) / k) rows), the rule of the jet and
    lensing data sets. ``remainder_to="last"``: the last ``n % k`` classes get one more, the
    e/gamma rule (``n // 2`` photons, the rest electrons). The two differ whenever ``k`` does not
    divide ``n``, and each is part of its data set's recipe, so the caller must say which.
    """
    if remainder_to not in ("first", "last"):
        raise ValueError(f"remainder_to must be 'first' or 'last', got {remainder_to!r}")
    counts = [max(0, -(-(n - c) // k)) for c in range(k)]
    return counts if remainder_to == "first" else counts[::-1]


def shard_blocks(n_items: int, block_size: int, shard: int, num_shards: int) -> range:
    """The blocks of ``block_size`` items (the last one may be short) that a shard generates.

    Blocks are dealt out contiguously, ``num_shards`` shares differing by at most one block, so
    no block is split and the shards together hold exactly the unsharded blocks.
    """
    n_blocks = -(-n_items // block_size)
    return range(shard * n_blocks // num_shards, (shard + 1) * n_blocks // num_shards)


def shard_range(n_items: int, block_size: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Block-aligned contiguous share ``[start, stop)`` of ``[0, n_items)`` for one shard."""
    blocks = shard_blocks(n_items, block_size, shard, num_shards)
    return min(blocks.start * block_size, n_items), min(blocks.stop * block_size, n_items)


def shard_suffix(shard: int, num_shards: int) -> str:
    """``_shard{i}of{k}`` for a sharded run, empty otherwise (file names of unsharded runs)."""
    return f"_shard{shard}of{num_shards}" if num_shards > 1 else ""
