"""On-disk formats: the block-sparse HDF5 dataset, its splits, and DeepH folders."""
