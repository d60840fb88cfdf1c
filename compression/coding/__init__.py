"""Writing the container: per-tensor encoding records (`encoding`), 1-D k-means weight sharing
(`kmeans1d`) and the `.mpz` writer (`container`). The byte-level coders (bitpack, canonical Huffman,
relative sparse indices) and every decoder live in the torch-free reader, `mpclient.format`."""
