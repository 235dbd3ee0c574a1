"""Vectorised jet-image building: particles -> (eta, phi) crystal grid, pure NumPy.

Everything here works on *flat* arrays of particles from many jets at once (``jet`` tells which
jet each particle belongs to), so a whole chunk of jets is pixelated with one ``np.bincount``;
there is no per-jet Python loop. The simulators in :mod:`e2evision.simulate.jets` call it; the
observables at the end (:func:`image_mass`, :func:`image_girth`) let tests and plots check the
images independently of the generator-level truth.

Geometry (CMS barrel ECAL crystals, as the public E2E images):

* a pixel is one crystal, ``CRYSTAL_DETA = 0.0174`` in eta and ``CRYSTAL_DPHI = 2 pi / 360`` in phi
  (so that phi wraps after exactly 360 crystals);
* crystal indices are absolute: ``ieta = floor(eta / 0.0174)``, ``iphi = floor(phi / (2pi/360))``
  with phi in [0, 2 pi); an image is centred on the crystal that holds the jet axis, at pixel
  ``(size // 2, size // 2)``; axis 1 of an image is eta, axis 2 is phi;
* HCAL towers are 5 x 5 crystals on the absolute grid (0.087 x 0.087, 72 towers in phi); a tower's
  energy is spread evenly over its 25 pixels, so the image sum is unchanged.

Units: momenta and energies in GeV, lengths in mm (Pythia's unit), magnetic field in tesla.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "CRYSTAL_DETA",
    "CRYSTAL_DPHI",
    "N_IPHI",
    "crystal_eta",
    "crystal_phi",
    "pixelate",
    "spread_towers",
    "bend_phi",
    "calorimeter_radius_mm",
    "impact_parameters",
    "layer_crossings",
    "pixel_offsets",
    "image_mass",
    "image_girth",
]

CRYSTAL_DETA = 0.0174
CRYSTAL_DPHI = 2.0 * math.pi / 360.0
N_IPHI = 360
_C_GEV_PER_T_M = 0.299792458  # pT [GeV] = 0.3 B [T] R [m]


def crystal_eta(eta: np.ndarray) -> np.ndarray:
    """Absolute crystal index in eta (signed; crystal 0 spans [0, 0.0174))."""
    return np.floor(np.asarray(eta, dtype=np.float64) / CRYSTAL_DETA).astype(np.int64)


def crystal_phi(phi: np.ndarray) -> np.ndarray:
    """Absolute crystal index in phi, in [0, 360) whatever range phi comes in."""
    idx = np.floor(np.asarray(phi, dtype=np.float64) / CRYSTAL_DPHI).astype(np.int64)
    return np.mod(idx, N_IPHI)


def _relative(
    jet: np.ndarray,
    ieta: np.ndarray,
    iphi: np.ndarray,
    centre_ieta: np.ndarray,
    centre_iphi: np.ndarray,
    size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel row/column of each crystal in its jet's image and whether it falls inside."""
    half = size // 2
    row = ieta - centre_ieta[jet] + half
    dphi = np.mod(iphi - centre_iphi[jet] + N_IPHI // 2, N_IPHI) - N_IPHI // 2  # wrap to [-180, 180)
    col = dphi + half
    inside = (row >= 0) & (row < size) & (col >= 0) & (col < size)
    return row, col, inside


def pixelate(
    jet: np.ndarray,
    ieta: np.ndarray,
    iphi: np.ndarray,
    weight: np.ndarray,
    centre_ieta: np.ndarray,
    centre_iphi: np.ndarray,
    size: int,
    channel: np.ndarray | None = None,
    n_channels: int = 1,
) -> np.ndarray:
    """Sum ``weight`` into ``(n_jets, size, size)`` images with one bincount.

    ``jet[i]`` is the image that particle i belongs to, ``(ieta[i], iphi[i])`` its absolute crystal;
    image j is centred on crystal ``(centre_ieta[j], centre_iphi[j])``. Particles outside their
    image are dropped. With ``channel`` (one per entry, in ``[0, n_channels)``) all channels are
    filled by the same bincount and the result is ``(n_jets, n_channels, size, size)``. Returns
    float64 images (last two axes: eta, phi).
    """
    n_jets = int(np.asarray(centre_ieta).shape[0])
    jet = np.asarray(jet, dtype=np.int64)
    if jet.size and (jet.min() < 0 or jet.max() >= n_jets):
        raise ValueError(f"jet indices must lie in [0, {n_jets}), got [{jet.min()}, {jet.max()}]")
    row, col, inside = _relative(
        jet,
        np.asarray(ieta, np.int64),
        np.asarray(iphi, np.int64),
        np.asarray(centre_ieta, np.int64),
        np.asarray(centre_iphi, np.int64),
        size,
    )
    plane = jet[inside]
    if channel is not None:
        ch = np.asarray(channel, dtype=np.int64)[inside]
        if ch.size and (ch.min() < 0 or ch.max() >= n_channels):
            raise ValueError(f"channel indices must lie in [0, {n_channels})")
        plane = plane * n_channels + ch
    flat = (plane * size + row[inside]) * size + col[inside]
    out = np.bincount(
        flat, weights=np.asarray(weight, np.float64)[inside], minlength=n_jets * n_channels * size * size
    ).astype(np.float64, copy=False)
    # (bincount returns integers when nothing is inside, weights or not)
    if channel is None:
        return out.reshape(n_jets, size, size)
    return out.reshape(n_jets, n_channels, size, size)


def spread_towers(
    jet: np.ndarray, ieta: np.ndarray, iphi: np.ndarray, weight: np.ndarray, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Move each deposit to its ``block x block`` tower and split it evenly over the tower's crystals.

    Towers sit on the absolute crystal grid (tower ``floor(ieta / block)``), as the HCAL towers
    of CMS cover 5 x 5 ECAL crystals. Returns ``block**2`` times as many (jet, ieta, iphi, weight)
    entries, ready for :func:`pixelate`; ``block = 1`` returns the input unchanged.
    """
    if block == 1:
        return jet, ieta, iphi, weight
    if block < 1 or N_IPHI % block:
        raise ValueError(f"tower block must be >= 1 and divide {N_IPHI}, got {block}")
    base_eta = np.floor_divide(ieta, block) * block
    base_phi = np.floor_divide(iphi, block) * block
    off = np.arange(block)
    d_eta = np.repeat(off, block)
    d_phi = np.tile(off, block)
    n_sub = block * block
    out_eta = (base_eta[:, None] + d_eta[None, :]).ravel()
    out_phi = np.mod(base_phi[:, None] + d_phi[None, :], N_IPHI).ravel()
    return (np.repeat(jet, n_sub), out_eta, out_phi, np.repeat(weight / n_sub, n_sub))


def bend_phi(
    phi: np.ndarray, charge: np.ndarray, pt: np.ndarray, radius_mm: np.ndarray | float, b_field_t: float
) -> tuple[np.ndarray, np.ndarray]:
    """phi where a track from the beam line crosses ``radius_mm``, and whether it gets there.

    In a field B along +z a track of charge q and transverse momentum pT moves on a circle of
    radius R = pT / (0.3 B); at radius r its position has turned by -q asin(r / 2R) (clockwise for
    q > 0). Tracks with 2R < r curl up before reaching r. Neutral particles are unchanged.
    """
    radius_m = np.asarray(radius_mm, dtype=np.float64) / 1000.0
    if b_field_t == 0:
        return np.asarray(phi, np.float64), np.ones(np.shape(phi), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = _C_GEV_PER_T_M * b_field_t * radius_m / (2.0 * np.asarray(pt, np.float64))
    reaches = (charge == 0) | (s < 1.0)
    turn = np.where(reaches & (charge != 0), np.arcsin(np.clip(s, 0.0, 1.0)), 0.0)
    return phi - np.sign(charge) * turn, reaches


def calorimeter_radius_mm(eta: np.ndarray, barrel_radius_mm: float, endcap_z_mm: float) -> np.ndarray:
    """Transverse radius where a straight line at ``eta`` meets the calorimeter's front face.

    The barrel is a cylinder of radius ``barrel_radius_mm``; beyond it the endcap disks sit at
    |z| = ``endcap_z_mm``, reached at r = z / |sinh eta| (closer to the beam, so less bending).
    """
    sinh = np.abs(np.sinh(np.asarray(eta, np.float64)))
    with np.errstate(divide="ignore"):
        r_endcap = np.where(sinh > 0, endcap_z_mm / np.where(sinh > 0, sinh, 1.0), np.inf)
    return np.minimum(barrel_radius_mm, r_endcap)


def impact_parameters(
    vx: np.ndarray, vy: np.ndarray, vz: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Signed transverse (d0) and longitudinal (dz) impact parameters of straight tracks [mm].

    For a track produced at (vx, vy, vz) with momentum p, the point of closest approach to the
    beam line in the transverse plane lies at ``t = -(v . p_T) / pT^2``; d0 = (vx py - vy px) / pT
    is its signed distance and dz its z. Curvature changes d0 only at O(d0 / R), negligible for
    the mm-scale displacements of b and c hadron decays. Prompt particles give exactly 0.
    """
    pt2 = px * px + py * py
    pt = np.sqrt(pt2)
    safe_pt = np.where(pt > 0, pt, 1.0)
    d0 = np.where(pt > 0, (vx * py - vy * px) / safe_pt, 0.0)
    t = np.where(pt > 0, -(vx * px + vy * py) / np.where(pt2 > 0, pt2, 1.0), 0.0)
    dz = vz + t * pz
    return d0, dz


def layer_crossings(
    vx: np.ndarray,
    vy: np.ndarray,
    vz: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    charge: np.ndarray,
    radius_mm: float,
    half_length_mm: float,
    b_field_t: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where charged tracks cross a barrel layer: (crosses, eta_hit, phi_hit) as seen from the origin.

    A track crosses the cylinder of radius r if it is charged, produced inside it (|v_T| < r),
    does not curl up before it, and crosses within |z| < half length. The crossing point is the
    straight-line intersection, turned in phi by the sagitta -q L^2 / (2 R r) for a transverse
    path length L (exact to first order; equal to -q asin(r / 2R) for tracks from the origin).
    """
    pt = np.hypot(px, py)
    safe_pt = np.where(pt > 0, pt, 1.0)
    ux, uy = px / safe_pt, py / safe_pt
    v_dot_u = vx * ux + vy * uy
    v2 = vx * vx + vy * vy
    disc = v_dot_u * v_dot_u - (v2 - radius_mm * radius_mm)
    inside = (v2 < radius_mm * radius_mm) & (charge != 0) & (pt > 0)
    path = -v_dot_u + np.sqrt(np.clip(disc, 0.0, None))  # transverse path length to the layer
    x = vx + path * ux
    y = vy + path * uy
    z = vz + path * pz / safe_pt
    curvature_radius_mm = safe_pt / (_C_GEV_PER_T_M * b_field_t) * 1000.0 if b_field_t else np.inf
    reaches = (2.0 * curvature_radius_mm > path) if b_field_t else np.ones_like(inside)
    crosses = inside & reaches & (np.abs(z) < half_length_mm)
    phi = np.arctan2(y, x) - np.sign(charge) * path * path / (2.0 * curvature_radius_mm * radius_mm)
    eta = np.arcsinh(z / radius_mm)
    return crosses, eta, phi


# ------------------------------------------------------------------------------------------------
# observables computed from the images alone (independent checks of the pixelation)


def pixel_offsets(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(delta eta, delta phi) of each pixel centre from the centre pixel's centre, (size, size) each."""
    k = np.arange(size) - size // 2
    return (
        np.broadcast_to((k * CRYSTAL_DETA)[:, None], (size, size)),
        np.broadcast_to((k * CRYSTAL_DPHI)[None, :], (size, size)),
    )


def image_mass(et: np.ndarray) -> np.ndarray:
    """Invariant mass of transverse-energy images ``(N, H, W)``, treating pixels as massless.

    Uses pixel-centre offsets from the image centre as (eta, phi): the mass of massless vectors
    depends only on their differences in eta and phi, so the jet's absolute position is not
    needed. Agrees with the jet mass up to pixel granularity, towers and detector effects.
    """
    et = np.asarray(et, dtype=np.float64)
    if et.ndim != 3:
        raise ValueError(f"expected (N, H, W) transverse-energy images, got shape {et.shape}")
    d_eta, d_phi = pixel_offsets(et.shape[1])
    if et.shape[2] != et.shape[1]:
        raise ValueError(f"expected square images, got {et.shape[1:]}")
    e = np.einsum("nij,ij->n", et, np.cosh(d_eta))
    pz = np.einsum("nij,ij->n", et, np.sinh(d_eta))
    px = np.einsum("nij,ij->n", et, np.cos(d_phi))
    py = np.einsum("nij,ij->n", et, np.sin(d_phi))
    return np.sqrt(np.clip(e * e - px * px - py * py - pz * pz, 0.0, None))


def image_girth(et: np.ndarray) -> np.ndarray:
    """pT-weighted mean distance of the pixels from the image centre (jet axis), ``(N, H, W)``.

    The image version of the jet girth sum_i pT_i dR_i / sum_i pT_i; empty images give 0.
    """
    et = np.asarray(et, dtype=np.float64)
    d_eta, d_phi = pixel_offsets(et.shape[1])
    dr = np.hypot(d_eta, d_phi)
    total = et.sum(axis=(1, 2))
    num = np.einsum("nij,ij->n", et, dr)
    return np.where(total > 0, num / np.where(total > 0, total, 1.0), 0.0)
