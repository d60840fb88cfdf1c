"""Pure-array building blocks of the Deep Compression pipeline (Han et al. 2016):
relative sparse indexing, 1-D k-means weight sharing and canonical Huffman coding.
Everything here works on numpy arrays and bytes; no torch, no file I/O."""
