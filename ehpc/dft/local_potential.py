"""The grid part of a converged Kohn-Sham matrix at any k-point, within a memory budget.

The Hartree, exchange-correlation and long-range local pseudopotential terms are one local
potential v(r) on PySCF's multigrid mesh.  ``local_potential_g`` builds it once from the
converged density; ``matrices_at_kpts`` integrates it against the Bloch orbital pairs at
any k with PySCF's k-point multigrid.

That integration (``multigrid.eval_mat``) fills a real buffer of every lattice image times
every pair of primitive Cartesian functions, then a complex copy of it: 38 GB for the
first copy alone at 216 Si atoms in gth-dzvp-molopt-sr (63 images, 8,640 primitives).
``matrices_at_kpts`` therefore takes the k-points in batches and, for the duration of the
call, has ``eval_mat`` work on slices of its first shell range, each within the budget.
The slices are rows of the same matrix, so the result is unchanged
(tests/dft/test_periodic_bands.py compares it with the unsliced call).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

#: memory (bytes) one multigrid integration may take for its image buffers
LOCAL_BUFFER_BYTES = 2 * 2**30


def local_potential_g(mf) -> np.ndarray:
    """Hartree + XC (LDA or GGA) + long-range local pseudopotential of ``mf``'s converged
    density, in reciprocal space on the multigrid mesh, scaled as PySCF's multigrid
    integrals take it.                                                      # [n_grid]

    The density comes from PySCF's pair multigrid for a Γ-only SCF (memory-lean at large
    cells) and from the k-point multigrid otherwise.
    """
    from pyscf.pbc import tools
    from pyscf.pbc.dft.multigrid import multigrid, multigrid_pair
    from pyscf.pbc.dft.multigrid.pp import _get_vpplocG_part1
    from pyscf.pbc.lib.kpts_helper import gamma_point

    cell = mf.cell
    pair = multigrid_pair.MultiGridNumInt(cell)
    grid = multigrid.MultiGridNumInt(cell)
    if tuple(grid.mesh) != tuple(pair.mesh):
        raise RuntimeError(f"PySCF multigrid meshes differ: {grid.mesh} vs {pair.mesh}")
    xctype = grid._xc_type(mf.xc)
    if xctype not in ("LDA", "GGA"):
        raise NotImplementedError(f"{mf.xc}: only LDA and GGA functionals are rebuilt at k")
    deriv = 1 if xctype == "GGA" else 0
    density = mf.make_rdm1()
    kpts = np.asarray(mf.kpts).reshape(-1, 3)
    if gamma_point(kpts):
        density = np.asarray(density).reshape(1, cell.nao, cell.nao)
        rho_g = multigrid_pair._eval_rhoG(pair, density, hermi=1, kpts=kpts, deriv=deriv)
    else:
        rho_g = multigrid._eval_rhoG(grid, density, hermi=1, kpts=kpts, deriv=deriv)
    rho_g = rho_g.reshape(-1, rho_g.shape[-1])[: 4 if deriv else 1]  # [1 or 4, n_grid]

    mesh = grid.mesh
    n_grid = int(np.prod(mesh))
    weight = cell.vol / n_grid
    hartree = rho_g[0] * tools.get_coulG(cell, mesh=mesh)
    rho_r = tools.ifft(rho_g, mesh).real / weight  # [1 or 4, n_grid]
    vxc = grid.eval_xc_eff(mf.xc, rho_r[0] if deriv == 0 else rho_r, deriv=1, xctype=xctype)[1]
    wv = tools.fft(weight * np.asarray(vxc).reshape(-1, n_grid), mesh).reshape(-1, n_grid)
    xc = wv[0]
    if deriv:  # ∫ w·∇(φ_i φ_j) = -∫ (∇·w) φ_i φ_j: the gradient term as a local potential
        xc = xc - np.einsum("xp,px->p", 1j * wv[1:4], cell.get_Gv(mesh))
    return xc + hartree + _get_vpplocG_part1(pair, with_rho_core=True)


def matrices_at_kpts(cell, potential_g: np.ndarray, kpts_abs: np.ndarray,
                     max_bytes: int = LOCAL_BUFFER_BYTES) -> np.ndarray:
    """``<φ_i^k| v |φ_j^k>`` of a local potential given as :func:`local_potential_g`
    returns it, in Hartree.                                       # [n_k, nao, nao]"""
    from pyscf.pbc.dft.multigrid import multigrid

    grid = multigrid.MultiGridNumInt(cell)
    kpts_abs = np.asarray(kpts_abs).reshape(-1, 3)
    primitives = cell.npgto_nr(cart=True)
    per_kpt = 3 * 16 * primitives**2  # pass 2's complex [k, primitive, primitive] and copies
    k_batch = max(1, int(max_bytes // per_kpt))
    out = np.empty((len(kpts_abs), cell.nao, cell.nao), dtype=np.complex128)
    with _eval_mat_in_slices(max_bytes):
        for k in range(0, len(kpts_abs), k_batch):
            part = multigrid._get_j_pass2(grid, potential_g, 1, kpts_abs[k:k + k_batch])
            out[k:k + k_batch] = np.asarray(part).reshape(-1, cell.nao, cell.nao)
    return out


@contextmanager
def _eval_mat_in_slices(max_bytes: int):
    """PySCF's ``multigrid.eval_mat`` on slices of its first shell range, so that its
    image buffers (real, then complex) stay within ``max_bytes``."""
    from pyscf.pbc import gto
    from pyscf.pbc.dft.multigrid import multigrid

    whole = multigrid.eval_mat

    def sliced(cell, weights, shls_slice=None, comp=1, hermi=0, xctype="LDA", kpts=None,
               mesh=None, offset=None, submesh=None):
        def call(shells):
            return whole(cell, weights, shells, comp, hermi, xctype, kpts, mesh, offset,
                         submesh)

        if shls_slice is None:
            shls_slice = (0, cell.nbas, 0, cell.nbas)
        if hermi != 0:  # a Hermitian fill needs the whole square
            return call(shls_slice)
        i0, i1, j0, j1 = shls_slice
        ao_loc = cell.ao_loc_nr(cart=True)
        n_images = len(gto.eval_gto.get_lattice_Ls(cell, dimension=3))
        per_row = 24 * comp * n_images * (ao_loc[j1] - ao_loc[j0])  # bytes per bra function
        rows = max(1, int(max_bytes // per_row))
        pieces, start = [], i0
        while start < i1:
            stop = start + 1
            while stop < i1 and ao_loc[stop + 1] - ao_loc[start] <= rows:
                stop += 1
            pieces.append((start, stop))
            start = stop
        if len(pieces) == 1:
            return call(shls_slice)
        parts = [call((a, b, j0, j1)) for a, b in pieces]  # bra rows: axis -2 of each
        if isinstance(parts[0], list):  # one matrix per potential
            return [np.concatenate(rows_, axis=-2) for rows_ in zip(*parts)]
        return np.concatenate(parts, axis=-2)

    multigrid.eval_mat = sliced
    try:
        yield
    finally:
        multigrid.eval_mat = whole
