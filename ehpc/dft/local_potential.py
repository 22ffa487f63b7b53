"""The grid part of a converged Kohn-Sham matrix at any k-point, within a memory budget.

The Hartree, exchange-correlation and long-range local pseudopotential terms are one local
potential v(r) on PySCF's multigrid mesh.  ``local_potential_g`` builds it once from the
converged density; ``matrices_at_kpts`` integrates it against the Bloch orbital pairs at
any k with PySCF's k-point multigrid.

PySCF's own integration (``multigrid._get_j_pass2``) calls ``eval_mat`` on all primitive
pairs at once, which fills a real buffer of every lattice image times every pair of
primitive Cartesian functions, then a complex copy of it: 38 GB for the first copy alone
at 216 Si atoms in gth-dzvp-molopt-sr (63 images, 8,640 primitives).  The same algorithm
here calls it on slices of bra shells within a budget, for all k-points at once (the
collocation over images does not depend on k), and contracts each slice to the basis at
once (tests/dft/test_periodic_bands.py compares it with PySCF's call).
"""

from __future__ import annotations

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
    returns it, in Hartree.                                       # [n_k, nao, nao]

    PySCF's multigrid tasks, each a grid level with its compact ("dense") and diffuse
    shells.  The diffuse level is integrated on its uniform grid; on every other level
    the primitive Cartesian pairs are collocated over the lattice images once per slice
    of bra shells for all k-points together, and each slice is contracted to the
    basis at once, so no buffer holds all primitive pairs.
    """
    import scipy.linalg
    import scipy.sparse
    from pyscf.lib import logger
    from pyscf.pbc import gto, tools
    from pyscf.pbc.df import fft
    from pyscf.pbc.dft.multigrid import multigrid

    grid = multigrid.MultiGridNumInt(cell)
    kpts_abs = np.asarray(kpts_abs).reshape(-1, 3)
    n_k = len(kpts_abs)
    potential_g = np.asarray(potential_g).reshape(grid.mesh)
    out = np.zeros((n_k, cell.nao, cell.nao), dtype=np.complex128)
    tasks = multigrid.multi_grids_tasks(cell, grid.mesh, logger.new_logger(cell, 0))
    for dense, sparse in tasks:
        mesh = dense.mesh
        freq = [np.fft.fftfreq(m, 1.0 / m).astype(int) for m in mesh]
        level_g = potential_g[np.ix_(*freq)].reshape(1, -1)  # this level's G vectors
        v_r = np.ascontiguousarray(tools.ifft(level_g, mesh).real)  # [1, n_grid]
        bra = dense.ao_idx
        if sparse is None:  # the most diffuse functions: the plain uniform-grid integral
            for ao_etc, p0, p1 in fft.FFTDF(cell, kpts=kpts_abs).aoR_loop(dense, kpts_abs):
                ao = ao_etc[0]  # [n_k, n_points, n_bra]
                for k in range(n_k):
                    out[k][np.ix_(bra, bra)] += ao[k].conj().T @ (v_r[0, p0:p1, None] * ao[k])
            continue
        ket = sparse.ao_idx
        h_cell, h_coeff = dense.cell.decontract_basis(to_cart=True, aggregate=True)
        l_cell, l_coeff = sparse.cell.decontract_basis(to_cart=True, aggregate=True)
        t_cell = h_cell + l_cell
        t_coeff = scipy.linalg.block_diag(h_coeff, l_coeff)  # [n_prim_t, n_bra + n_ket]
        t_map = scipy.sparse.csr_matrix(t_coeff)  # each primitive feeds a few functions
        prim_loc = h_cell.ao_loc_nr(cart=True)
        n_images = len(gto.eval_gto.get_lattice_Ls(t_cell, dimension=3))
        per_row = (24 * n_images + 16 * n_k) * len(t_coeff)  # bytes per bra primitive
        rows = max(1, int(max_bytes // per_row))
        block = np.zeros((n_k, len(bra), t_coeff.shape[1]), dtype=np.complex128)
        start = 0
        while start < h_cell.nbas:
            stop = start + 1
            while stop < h_cell.nbas and prim_loc[stop + 1] - prim_loc[start] <= rows:
                stop += 1
            vp = np.asarray(multigrid.eval_mat(t_cell, v_r, (start, stop, 0, t_cell.nbas), 1, 0,
                                               "LDA", kpts_abs))
            block += _contract_to_basis(vp.reshape(n_k, -1, len(t_coeff)), t_map,
                                        h_coeff[prim_loc[start]:prim_loc[stop]])
            start = stop
        n_bra = len(bra)
        out[:, bra[:, None], bra] += block[:, :, :n_bra]
        out[:, bra[:, None], ket] += block[:, :, n_bra:]
        out[:, ket[:, None], bra] += block[:, :, n_bra:].conj().transpose(0, 2, 1)
    return out


def _contract_to_basis(vp: np.ndarray, t_map, bra_coeff: np.ndarray) -> np.ndarray:
    """``Σ_pq bra_coeff[p, i] vp[k, p, q] t_map[q, j]``: primitive matrices to the basis.

    Both maps are sparse (a primitive feeds a few contracted functions), so the products
    cost the size of ``vp`` times a few, not its size times the number of functions.

    Args:
        vp: integrals of a slice of bra primitives at each k.  # [n_k, n_slice, n_prim_t]
        t_map: sparse primitives-to-functions map of bra and ket. # [n_prim_t, n_t]
        bra_coeff: the slice's rows of the bra map.          # [n_slice, n_bra]

    Returns:
        the slice's contribution to the bra rows.            # [n_k, n_bra, n_t]
    """
    import scipy.sparse

    n_k, n_slice, n_prim = vp.shape
    right = t_map.T @ vp.reshape(-1, n_prim).T  # [n_t, n_k * n_slice]
    right = np.asarray(right).reshape(-1, n_k, n_slice).transpose(2, 1, 0)  # [n_slice, n_k, n_t]
    left = scipy.sparse.csr_matrix(bra_coeff.T)  # [n_bra, n_slice]
    out = left @ right.reshape(n_slice, -1)  # [n_bra, n_k * n_t]
    return np.asarray(out).reshape(bra_coeff.shape[1], n_k, -1).transpose(1, 0, 2)
