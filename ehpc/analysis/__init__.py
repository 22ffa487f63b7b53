"""Model versus DFT, below the command line: errors, bands, figures, learning curves.

- ``evaluate.py``: matrix-element, eigenvalue and band errors against DFT and the truth;
- ``bands.py``: band structures from block-sparse H(R) with the exact S(R);
- ``dft_bands.py``: the reference DFT band structure of a small crystal (PySCF);
- ``plots.py``: parity, band and DOS figures;
- ``learning_curve.py``: the training metrics file and its figure.
"""
