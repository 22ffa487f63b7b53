"""The figures people look at: parity, band structure, density of states (PNG, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import replacing

#: Gaussian broadening (eV) of the density of states
DOS_SIGMA_EV = 0.05
#: most points drawn in a parity plot (a random subset above that)
PARITY_MAX_POINTS = 200_000


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parity(dft: np.ndarray, model: np.ndarray, path: str | Path, title: str = "", seed: int = 0) -> Path:
    """Predicted versus DFT matrix elements (eV), with the MAE in the legend."""
    plt = _pyplot()
    dft, model = np.asarray(dft), np.asarray(model)
    mae = float(np.abs(model - dft).mean())
    if len(dft) > PARITY_MAX_POINTS:
        keep = np.random.default_rng(seed).choice(len(dft), PARITY_MAX_POINTS, replace=False)
        dft, model = dft[keep], model[keep]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=150)
    lo, hi = float(min(dft.min(), model.min())), float(max(dft.max(), model.max()))
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8, zorder=0)
    ax.scatter(dft, model, s=2, alpha=0.4, label=f"MAE {mae * 1e3:.2f} meV")
    ax.set_xlabel("DFT matrix element (eV)")
    ax.set_ylabel("predicted matrix element (eV)")
    ax.set_title(title or "Hamiltonian matrix elements")
    ax.legend(loc="upper left", frameon=False)
    return _save(fig, path)


def band_structure(x: np.ndarray, bands: dict[str, np.ndarray], ticks: list[tuple[float, str]],
                   path: str | Path, fermi: float = 0.0, window: float = 6.0, title: str = "") -> Path:
    """Bands along a k-path, relative to ``fermi``; one line style per entry of ``bands``.

    Args:
        x: cumulative path length of each k-point.        # [n_k]
        bands: label -> eigenvalues in eV.                 # [n_k, n_bands]
        ticks: (position, label) of the special points.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=150)
    styles = [dict(color="black", lw=1.6), dict(color="tab:blue", lw=1.0, ls=":"),
              dict(color="tab:red", lw=1.0, ls="--")]
    if len(bands) == 2:
        styles = [styles[0], styles[2]]
    for (label, energies), style in zip(bands.items(), styles * len(bands)):
        lines = ax.plot(x, np.asarray(energies) - fermi, **style)
        lines[0].set_label(label)
    for pos, _ in ticks:
        ax.axvline(pos, color="0.8", lw=0.6)
    ax.axhline(0.0, color="0.5", lw=0.6, ls=":")
    ax.set_xticks([p for p, _ in ticks], [name.replace("G", "Γ") for _, name in ticks])
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(-window, window)
    ax.set_ylabel("E − E_F (eV)")
    ax.set_title(title or "band structure")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(bands), frameon=False,
              fontsize=8)
    return _save(fig, path)


def density_of_states(eigenvalues: np.ndarray, fermi: float, path: str | Path, title: str = "",
                      sigma: float = DOS_SIGMA_EV) -> Path:
    """Gaussian-broadened DOS of the computed eigenvalues around E_F."""
    plt = _pyplot()
    e = np.asarray(eigenvalues) - fermi
    span = max(float(np.abs(e).max()), 5 * sigma) + 5 * sigma
    grid = np.linspace(-span, span, 1000)
    dos = np.exp(-0.5 * ((grid[:, None] - e[None, :]) / sigma) ** 2).sum(axis=1)
    dos /= sigma * np.sqrt(2 * np.pi)  # states / eV
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=150)
    ax.fill_between(grid, dos, color="tab:blue", alpha=0.4, lw=0)
    ax.plot(grid, dos, color="tab:blue", lw=1)
    ax.vlines(e, 0, dos.max() * 0.08, color="black", lw=0.6)
    ax.axvline(0.0, color="tab:red", lw=0.8, ls="--", label="E_F")
    ax.set_xlabel("E − E_F (eV)")
    ax.set_ylabel("states / eV")
    ax.set_title(title or f"{len(e)} states nearest E_F")
    ax.legend(frameon=False)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    try:
        with replacing(path, suffix=".png") as tmp:  # matplotlib picks the format from the name
            fig.savefig(tmp)
    finally:
        _pyplot().close(fig)
    return Path(path)
