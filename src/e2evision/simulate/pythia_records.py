"""Pythia 8 event batches (awkward arrays) as flat NumPy columns, read from the layout buffers.

Shared by the jet generator (:mod:`e2evision.simulate.jets`) and the pile-up pool
(:mod:`e2evision.simulate.response`). Imports awkward only when a layout needs the slow route.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["event_record", "list_layout", "layout_numpy"]


def list_layout(layout: Any) -> Any:
    """A list layout with offsets starting at 0 (ListArray and ListOffsetArray alike)."""
    return layout.to_ListOffsetArray64(True)


def layout_numpy(layout: Any) -> np.ndarray:
    """A flat awkward layout as NumPy without the high-level dispatch (costly per call)."""
    data = getattr(layout, "data", None)
    if data is not None and isinstance(data, np.ndarray):
        return data
    import awkward as ak

    return ak.to_numpy(ak.Array(layout))


def event_record(ak: Any, batch: Any) -> dict[str, np.ndarray]:
    """Pythia's awkward batch -> flat NumPy columns of every particle, with per-event offsets.

    Reads the layout buffers directly (one awkward high-level call per field costs ~1 ms, about
    what a Pythia event without MPI costs). Vertices Pythia did not set (None) are the origin.
    """
    prt = list_layout(batch.layout.content("prt"))
    offsets = np.asarray(prt.offsets.data, dtype=np.int64)
    rec = prt.content
    n = int(offsets[-1])
    out: dict[str, np.ndarray] = {"offsets": offsets}
    for name in ("id", "status", "daughter1", "daughter2", "m"):
        out[name] = layout_numpy(rec.content(name))[:n]
    mom = rec.content("p")
    for src, dst in (("px", "px"), ("py", "py"), ("pz", "pz"), ("e", "e")):
        out[dst] = layout_numpy(mom.content(src))[:n].astype(np.float64)
    vtx = rec.content("vProd")
    if hasattr(vtx, "index") and hasattr(vtx, "content") and vtx.content.is_record:
        index = np.asarray(vtx.index.data, dtype=np.int64)[:n]
        has = index >= 0
        safe = np.where(has, index, 0)
        for src, dst in (("px", "vx"), ("py", "vy"), ("pz", "vz")):
            col = layout_numpy(vtx.content.content(src))
            out[dst] = np.where(has, col[safe] if col.size else 0.0, 0.0)
    else:  # other option layouts: the slow but general route
        v = ak.Array(vtx)
        for src, dst in (("px", "vx"), ("py", "vy"), ("pz", "vz")):
            out[dst] = ak.to_numpy(ak.fill_none(getattr(v, src), 0.0))[:n].astype(np.float64)
    return out
