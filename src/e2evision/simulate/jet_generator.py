"""Generation of one block of jets: Pythia events, FastJet clustering, selection, images.

This runs in worker processes: :func:`_run_task` is a worker's unit of work. Pythia and FastJet
are the optional ``[sim]`` extra, imported only inside functions; a missing one raises
:class:`MissingSimulatorError` naming the extra.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from e2evision.errors import MissingDependencyError
from e2evision.simulate.jet_config import JetSimConfig
from e2evision.simulate.jet_datasets import (
    _CHANNELS,
    _CLASSES,
    _block_rng,
    _JetClass,
    _pythia_seed,
    pythia_settings,
)
from e2evision.simulate.jet_images import _wrap, block_images
from e2evision.simulate.pixelate import crystal_eta, crystal_phi
from e2evision.simulate.pythia_records import event_record, layout_numpy, list_layout
from e2evision.simulate.response import jet_streams, pileup_pool

__all__ = ["INSTALL_HINT", "MissingSimulatorError", "require_simulators"]

INSTALL_HINT = "install the simulators with: pip install 'e2evision[sim]'"
_NEUTRINOS = (12, 14, 16)


#: Pythia 8 (``pythia8mc``), FastJet or awkward is not installed (the ``[sim]`` extra): an alias of
#: the one missing-dependency class, kept under the name the jet simulator documents
MissingSimulatorError = MissingDependencyError


def require_simulators() -> tuple[Any, Any, Any]:
    """Import and return ``(pythia8mc, fastjet, awkward)``, or say which extra to install."""
    missing = []
    modules = []
    for name in ("pythia8mc", "fastjet", "awkward"):
        try:
            modules.append(__import__(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingSimulatorError(
            f"the jet simulators need {', '.join(missing)}, which is not installed; {INSTALL_HINT}"
        )
    return modules[0], modules[1], modules[2]


@dataclass
class _Jets:
    """Accepted leading jets and their particles (flat, with ``part_jet`` the jet index)."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    n_const: np.ndarray
    girth: np.ndarray
    top_mass: np.ndarray
    part_jet: np.ndarray
    part: dict[str, np.ndarray]

    @staticmethod
    def concat(items: Sequence[_Jets]) -> _Jets:
        offsets = np.cumsum([0] + [len(it.pt) for it in items])
        return _Jets(
            *(
                np.concatenate([getattr(it, f) for it in items])
                for f in ("pt", "eta", "phi", "mass", "n_const", "girth", "top_mass")
            ),
            part_jet=np.concatenate([it.part_jet + o for it, o in zip(items, offsets)]),
            part={k: np.concatenate([it.part[k] for it in items]) for k in items[0].part},
        )

    def head(self, m: int) -> _Jets:
        keep = self.part_jet < m
        return _Jets(
            self.pt[:m],
            self.eta[:m],
            self.phi[:m],
            self.mass[:m],
            self.n_const[:m],
            self.girth[:m],
            self.top_mass[:m],
            self.part_jet[keep],
            {k: v[keep] for k, v in self.part.items()},
        )


class _ClassGenerator:
    """One initialised Pythia instance + jet definition for one class of one configuration."""

    def __init__(self, config: JetSimConfig, cls: _JetClass, seed: int) -> None:
        pythia8mc, fastjet, ak = require_simulators()
        self.config = config
        self.cls = cls
        self.ak = ak
        self.fastjet = fastjet
        try:  # FastJet prints a banner on stdout at the first clustering; keep job logs clean
            fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
        except Exception:  # pragma: no cover - cosmetic only
            pass
        self.pythia = pythia8mc.Pythia("", False)
        self.settings = pythia_settings(config, cls.name, _pythia_seed(seed, cls.key, -1))
        for line in self.settings:
            if not self.pythia.readString(line):
                raise ValueError(f"Pythia rejected the setting {line!r} ({config.dataset}/{cls.name})")
        if not self.pythia.init():
            raise RuntimeError(
                f"Pythia failed to initialise for {config.dataset}/{cls.name}; settings: {self.settings}"
            )
        self.jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, config.jet_radius)
        self._charges: dict[int, float] = {}

    def _charge(self, pid: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(pid, return_inverse=True)
        for u in uniq:
            if int(u) not in self._charges:
                self._charges[int(u)] = float(self.pythia.particleData.charge(int(u)))
        return np.array([self._charges[int(u)] for u in uniq])[inverse]

    def generate(self, pythia_seed: int, m: int) -> tuple[_Jets, int]:
        """The first ``m`` accepted jets of the stream ``pythia_seed`` and the events it took."""
        self.pythia.rndm.init(int(pythia_seed))
        found: list[_Jets] = []
        n_acc = n_events = 0
        while n_acc < m:
            # Batch size from counts only (deterministic); results do not depend on it anyway,
            # events being generated one after the other from the same stream.
            # Ask for what the acceptance so far says is missing, never more than needed if all
            # pass: a surplus event costs a full Pythia event, a further batch only milliseconds.
            rate = (n_acc + 1) / (n_events + 1)
            n_batch = int(min(256, math.ceil((m - n_acc) / rate)))
            batch = self.pythia.nextBatch(n_batch)
            n_events += n_batch
            jets = self._select(batch)
            if len(jets.pt):
                found.append(jets)
                n_acc += len(jets.pt)
            if n_events > 2000 + 1000 * m:
                raise RuntimeError(
                    f"{self.config.dataset}/{self.cls.name}: only {n_acc} of {n_events} events "
                    "pass the jet selection; loosen jet_eta_max / jet_pt_min_gev / top_match_dr"
                )
        return _Jets.concat(found).head(m), n_events

    def _select(self, batch: Any) -> _Jets:
        """Cluster each event of a Pythia batch and keep its leading jet if it passes the cuts."""
        cfg = self.config
        rec = event_record(self.ak, batch)
        n_ev = rec["offsets"].size - 1
        event_all = np.repeat(np.arange(n_ev), np.diff(rec["offsets"]))
        px, py, pz = rec["px"], rec["py"], rec["pz"]
        pt = np.hypot(px, py)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), 0.0))
        aid = np.abs(rec["id"])
        visible = (rec["status"] > 0) & (pt > 0) & (np.abs(eta) < cfg.particle_eta_max) & ~np.isin(aid, _NEUTRINOS)
        vis = np.flatnonzero(visible)  # record positions of the visible final state, event-ordered
        event = event_all[vis]
        vis_counts = np.bincount(event, minlength=n_ev)
        vis_start = np.concatenate([[0], np.cumsum(vis_counts)[:-1]])

        jets, cidx = self._cluster(px[vis], py[vis], pz[vis], rec["e"][vis], vis_counts)
        j_offsets, jpx, jpy, jpz, je = jets
        c_offsets, c_local_all = cidx
        j_counts = np.diff(j_offsets)
        jpt = np.hypot(jpx, jpy)
        has_jet = j_counts > 0
        ev_with = np.flatnonzero(has_jet)
        j_event = np.repeat(np.arange(n_ev), j_counts)
        # leading jet of each event: largest pT (first one on ties), vectorised over events
        order = np.lexsort((-jpt, j_event))
        first = np.r_[True, j_event[order][1:] != j_event[order][:-1]] if order.size else order
        lead = order[first] if order.size else np.zeros(0, dtype=np.int64)
        l_pt = jpt[lead]
        l_eta = np.arcsinh(jpz[lead] / np.where(l_pt > 0, l_pt, 1.0))
        l_phi = np.arctan2(jpy[lead], jpx[lead])
        l_mass = np.sqrt(np.clip(je[lead] ** 2 - jpx[lead] ** 2 - jpy[lead] ** 2 - jpz[lead] ** 2, 0.0, None))
        ok = (l_pt >= cfg.jet_pt_min_gev) & (np.abs(l_eta) < cfg.jet_eta_max)
        l_top = np.full(ev_with.size, np.nan)
        if np.isnan(self.cls.label) or self.cls.name == "top":
            l_top, dr, spread = _matched_top(rec, event_all, ev_with, l_eta, l_phi)
            if cfg.top_match_dr > 0:
                ok &= dr < cfg.top_match_dr
            if cfg.top_contained:
                ok &= spread < cfg.jet_radius
        sel_ev = ev_with[ok]
        sel_lead = lead[ok]
        n_sel = sel_ev.size

        # constituents of the selected leading jets, as positions in the visible arrays
        c_counts = c_offsets[sel_lead + 1] - c_offsets[sel_lead]
        c_jet = np.repeat(np.arange(n_sel), c_counts)
        within = np.arange(c_jet.size) - np.repeat(np.cumsum(c_counts) - c_counts, c_counts)
        c_local = c_local_all[c_offsets[sel_lead][c_jet] + within]
        c_vis = vis_start[sel_ev][c_jet] + c_local

        s_pt, s_eta, s_phi = l_pt[ok], l_eta[ok], l_phi[ok]
        c_pos = vis[c_vis]
        dphi = _wrap(np.arctan2(py[c_pos], px[c_pos]) - s_phi[c_jet])
        dr_const = np.hypot(eta[c_pos] - s_eta[c_jet], dphi)
        girth = np.bincount(c_jet, weights=pt[c_pos] * dr_const, minlength=n_sel) / np.where(s_pt > 0, s_pt, 1.0)

        if cfg.image_particles == "window":
            jet_of_event = np.full(n_ev, -1, dtype=np.int64)
            jet_of_event[sel_ev] = np.arange(n_sel)
            p_jet = jet_of_event[event]
            p_pos = vis[p_jet >= 0]
            p_jet = p_jet[p_jet >= 0]
        else:
            p_pos, p_jet = c_pos, c_jet
        part = {key: rec[key][p_pos] for key in ("id", "px", "py", "pz", "e", "vx", "vy", "vz")}
        part["charge"] = self._charge(part["id"])
        return _Jets(s_pt, s_eta, s_phi, l_mass[ok], c_counts, girth, l_top[ok], p_jet, part)

    def _cluster(
        self, px: np.ndarray, py: np.ndarray, pz: np.ndarray, e: np.ndarray, counts: np.ndarray
    ) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]:
        """Anti-kT over all events at once (FastJet's awkward interface).

        Returns the jets as (offsets per event, px, py, pz, E) and their constituents as
        (offsets per jet, index of each constituent within its event's input particles).
        """
        ak = self.ak
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        record = ak.contents.RecordArray(
            [ak.contents.NumpyArray(np.ascontiguousarray(a)) for a in (px, py, pz, e)],
            ["px", "py", "pz", "E"],
        )
        events = ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))
        cs = self.fastjet.ClusterSequence(events, self.jet_def)
        jet_min = 0.5 * self.config.jet_pt_min_gev
        jets = list_layout(cs.inclusive_jets(min_pt=jet_min).layout)
        j_offsets = np.asarray(jets.offsets.data, dtype=np.int64)
        fields = tuple(layout_numpy(jets.content.content(f))[: j_offsets[-1]] for f in ("px", "py", "pz", "E"))
        per_event = list_layout(cs.constituent_index(min_pt=jet_min).layout)
        per_jet = list_layout(per_event.content)
        e_off = np.asarray(per_event.offsets.data, dtype=np.int64)
        if not np.array_equal(e_off, j_offsets):
            raise RuntimeError(
                "FastJet returned constituents for a different set of jets than "
                "inclusive_jets; cannot attach constituents to jets"
            )
        c_offsets = np.asarray(per_jet.offsets.data, dtype=np.int64)
        c_local = layout_numpy(per_jet.content).astype(np.int64)
        return (j_offsets, *fields), (c_offsets, c_local)


def _matched_top(
    rec: dict[str, np.ndarray],
    event_all: np.ndarray,
    ev_with: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each jet: the closest top quark's mass, its Delta R, and the largest Delta R between
    the jet axis and that top's decay quarks (b and the W's two quarks). inf / NaN if no top.

    The top is taken at its last copy in the record (the one that decays to W b), whose mass is
    the Breit-Wigner mass Pythia generated for it; the decay quarks are taken before showering.
    """
    offsets = rec["offsets"]
    ids = rec["id"]
    base = offsets[event_all]
    d1 = np.where(rec["daughter1"] > 0, rec["daughter1"] + base, -1)  # global index, -1: none
    d2 = np.where(rec["daughter2"] > 0, rec["daughter2"] + base, -1)

    def last_copy(idx: np.ndarray) -> np.ndarray:
        for _ in range(100):  # follow the chain of recoil copies (same id, one daughter)
            nxt = d1[idx]
            same = (nxt >= 0) & (ids[np.maximum(nxt, 0)] == ids[idx])
            if not same.any():
                break
            idx = np.where(same, nxt, idx)
        return idx

    top = np.flatnonzero(np.abs(ids) == 6)
    top = top[(d1[top] >= 0) & (np.abs(ids[np.maximum(d1[top], 0)]) != 6)]  # decaying copies
    jet_of_event = np.full(offsets.size - 1, -1, dtype=np.int64)
    jet_of_event[ev_with] = np.arange(ev_with.size)
    t_jet = jet_of_event[event_all[top]]
    top = top[t_jet >= 0]
    t_jet = t_jet[t_jet >= 0]

    def eta_phi(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pt = np.hypot(rec["px"][idx], rec["py"][idx])
        return (np.arcsinh(rec["pz"][idx] / np.where(pt > 0, pt, 1.0)), np.arctan2(rec["py"][idx], rec["px"][idx]))

    def dr_to_jet(idx: np.ndarray) -> np.ndarray:
        eta, phi = eta_phi(idx)
        return np.hypot(eta - jet_eta[t_jet], _wrap(phi - jet_phi[t_jet]))

    dr = dr_to_jet(top)
    # decay quarks: t -> W b (two daughters, either order), W -> q qbar' after its copies
    first, second = d1[top], np.where(d2[top] >= 0, d2[top], d1[top])
    w_first = np.abs(ids[first]) == 24
    w = last_copy(np.where(w_first, first, second))
    b = np.where(w_first, second, first)
    q1 = d1[w]
    q2 = np.where(d2[w] >= 0, d2[w], q1)
    valid = (np.abs(ids[w]) == 24) & (q1 >= 0)
    spread = np.maximum.reduce([dr_to_jet(b), dr_to_jet(np.maximum(q1, 0)), dr_to_jet(np.maximum(q2, 0))])
    spread = np.where(valid, spread, np.inf)
    best_dr = np.full(ev_with.size, np.inf)
    best_m = np.full(ev_with.size, np.nan)
    best_spread = np.full(ev_with.size, np.inf)
    if top.size:
        order = np.lexsort((dr, t_jet))
        pick = order[np.r_[True, t_jet[order][1:] != t_jet[order][:-1]]]
        best_dr[t_jet[pick]] = dr[pick]
        best_m[t_jet[pick]] = rec["m"][top][pick]
        best_spread[t_jet[pick]] = spread[pick]
    return best_m, best_dr, best_spread


_WORKER_CACHE: dict[tuple[str, str, int], _ClassGenerator] = {}
_WORKER_CACHE_SIZE = 4  # initialised Pythia instances kept per process (~0.6 s each to rebuild)


def _run_task(task: tuple[JetSimConfig, int, int, int, int]) -> dict[str, np.ndarray]:
    """Generate ``m`` jets of class index ``c``, block ``b`` (a worker's unit of work)."""
    cfg, seed, c, block, m = task
    cpu0 = time.process_time()
    cls = _CLASSES[cfg.dataset][c]
    key = (cfg.to_json(), cls.name, seed)
    gen = _WORKER_CACHE.get(key)
    if gen is None:
        while len(_WORKER_CACHE) >= _WORKER_CACHE_SIZE:  # drop the oldest (insertion order)
            del _WORKER_CACHE[next(iter(_WORKER_CACHE))]
        gen = _WORKER_CACHE[key] = _ClassGenerator(cfg, cls, seed)
    jets, n_events = gen.generate(_pythia_seed(seed, cls.key, block), m)
    rng = _block_rng(seed, cls.key, block)
    streams = pool = None
    if cfg.response is not None:
        streams = jet_streams(seed, cls.key, block, m)
        if cfg.response.pileup_mean > 0:
            pool = pileup_pool(cfg.response, seed, cfg.ecm_gev, cfg.particle_eta_max)
    images, n_pileup = block_images(jets, cfg, rng, len(_CHANNELS[cfg.dataset]), streams, pool)
    c_eta = crystal_eta(jets.eta).astype(np.float64)
    c_phi = crystal_phi(jets.phi).astype(np.float64)
    flat = images.reshape(-1)
    nonzero = np.flatnonzero(flat)
    return {
        # images travel sparse (index, value): >95 % of pixels are 0, and a dense block of 32
        # top jets is 32 MB to pickle through a pipe
        "image_index": nonzero,
        "image_value": flat[nonzero],
        "image_count": np.array([m]),
        "pt": jets.pt,
        "m0": jets.mass,
        "eta": jets.eta,
        "phi": jets.phi,
        "ieta": c_eta,
        "iphi": c_phi,
        "n_const": jets.n_const.astype(np.int64),
        "girth": jets.girth,
        "top_mass": jets.top_mass,
        "n_pileup": n_pileup,
        "y": np.full(m, cls.label),
        "class_index": np.full(m, c, dtype=np.int64),
        "n_events": np.array([n_events]),
        "cpu_seconds": np.array([time.process_time() - cpu0]),
    }
