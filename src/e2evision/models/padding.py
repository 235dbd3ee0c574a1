"""Static zero padding shared by every model that needs a size constraint met.

Zero is "no deposit" in detector images, so padding is neutral; it is computed once at
construction so that ``forward`` has no data-dependent control flow and exports cleanly.
"""

from __future__ import annotations

Pair = tuple[int, int]


def pad_to_multiple(img_size: Pair, multiple: int) -> tuple[tuple[int, int, int, int], Pair]:
    """Symmetric zero padding ``(left, right, top, bottom)`` to a multiple, and the padded size."""
    h, w = img_size
    ph, pw = (-h) % multiple, (-w) % multiple
    return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), (h + ph, w + pw)
