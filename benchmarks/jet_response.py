"""What the jet detector response costs, and what it changes in the images, on the same jets.

    .venv/bin/python benchmarks/jet_response.py --dataset quark-gluon --n 128

One process, one core (one thread for NumPy). The same jets are simulated without and with the
response in alternating rounds (``--rounds``, default 3) and the fastest round of each is kept,
as the machine is shared. Round 1 also pays Pythia's initialisations (0.6 s per class); the
pile-up pool (Pythia initialisation + ``pileup_pool_size`` minimum-bias events, once per process
and seed) is built and timed before the rounds, reported as ``pool_cpu_s``. Prints CPU seconds
and images per CPU-second, then per class the image figures of
:func:`e2evision.simulate.response_plots.response_statistics`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from e2evision.simulate.jets import jet_class_names, jet_config, simulate_jets  # noqa: E402
from e2evision.simulate.response import pileup_pool  # noqa: E402
from e2evision.simulate.response_plots import response_statistics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="quark-gluon", choices=("quark-gluon", "top", "top-mass"))
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-mpi", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    on = jet_config(args.dataset, mpi=not args.no_mpi)
    off = dataclasses.replace(on, response=None)
    out: dict[str, object] = {"dataset": args.dataset, "n": args.n, "mpi": not args.no_mpi}

    ap_rounds = args.rounds
    cpu = time.process_time()
    pileup_pool(on.response, args.seed, on.ecm_gev, on.particle_eta_max)
    out["pool_cpu_s"] = round(time.process_time() - cpu, 2)
    best = {"without": float("inf"), "with": float("inf")}
    samples = {}
    for _ in range(ap_rounds):
        for label, cfg in (("without", off), ("with", on)):
            cpu = time.process_time()
            samples[label] = simulate_jets(args.dataset, args.n, args.seed, cfg)
            best[label] = min(best[label], time.process_time() - cpu)
    for label, dt in best.items():
        out[f"{label}_cpu_s"] = round(dt, 2)
        out[f"{label}_images_per_cpu_s"] = round(args.n / dt, 1)
    out["ratio_per_jet"] = round(best["with"] / best["without"], 2)
    out["ratio_including_pool"] = round((best["with"] + out["pool_cpu_s"]) / best["without"], 2)
    without, with_ = samples["without"], samples["with"]
    names = jet_class_names(args.dataset)
    for label, s in (("without", without), ("with", with_)):
        cls = s.truth["class_index"]
        for c, name in enumerate(names):
            st = response_statistics(s.images[cls == c], s.truth["eta"][cls == c], s.channels, on.jet_radius)
            out[f"{label}_{name}"] = {
                "ecal_nonzero_per_jet": round(float(st["ecal_nonzero"].mean()), 1),
                "hottest_fraction": round(float(st["hottest_fraction"].mean()), 3),
                "pileup_density_gev": round(float(st["pileup_density"].mean()), 2),
                "far_ecal_pixels_per_jet": round(st["far_energy"].size / max(1, int((cls == c).sum())), 1),
            }
    out["n_pileup_mean"] = round(float(np.mean(with_.truth["n_pileup"])), 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
