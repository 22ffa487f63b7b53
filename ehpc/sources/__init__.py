"""Where structures come from, one module per job (``ehpc-structures``, ``ehpc-datagen``).

- ``common.py``: the error every source raises, names, redrawing invalid samples;
- ``supercells.py``: rattled and strained crystal supercells;
- ``conformers.py``: thermal normal-mode conformers and molecular clusters;
- ``hessian.py``: the PySCF Hessian those conformers are drawn from, cached;
- ``spec.py``: YAML/JSON specs (``SPEC_KEYS``), their checks and builders.
"""

from . import hessian
from .common import SourceError, check_spread, check_unique_names, from_file
from .conformers import NormalModes, molecular_cluster, molecular_conformers, normal_modes
from .hessian import molecular_hessian
from .spec import SPEC_KEYS, SPEC_RANGES, check_spec, from_spec, from_spec_file, load_specs
from .supercells import rattle, rattled_supercells

__all__ = [
    "SPEC_KEYS",
    "SPEC_RANGES",
    "NormalModes",
    "SourceError",
    "check_spec",
    "check_spread",
    "check_unique_names",
    "from_file",
    "from_spec",
    "from_spec_file",
    "hessian",
    "load_specs",
    "molecular_cluster",
    "molecular_conformers",
    "molecular_hessian",
    "normal_modes",
    "rattle",
    "rattled_supercells",
]
