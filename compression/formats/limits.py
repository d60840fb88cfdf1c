"""Size bounds for hostile uploads; every reader checks these before allocating."""
from __future__ import annotations

MAX_MODEL_BYTES = 4 << 30          # whole file
MAX_SAFETENSORS_HEADER = 100 << 20  # JSON header of a safetensors file
MAX_PICKLE_BYTES = 64 << 20         # data.pkl of a torch.save archive (index only, no tensor data)
MAX_JSON_MEMBER = 64 << 20          # JSON members of a .pt2 archive
MAX_CODE_BYTES = 64 << 20           # all TorchScript code members together
MAX_SAMPLE_INPUT_BYTES = 64 << 20   # example inputs stored in a .pt2
MAX_ZIP_MEMBERS = 100_000
MAX_TENSORS = 100_000
MAX_INPUT_ELEMENTS = 16 << 20       # sample input built from options["input_shape"]
SUMMARY_LAYER_CAP = 500

# archives (Hugging Face folders uploaded as .zip / .tar.gz)
MAX_ARCHIVE_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 8 << 30        # all members together, uncompressed
MAX_ARCHIVE_RATIO = 50              # uncompressed / archive size; model weights barely compress
RATIO_SLACK_BYTES = 16 << 20        # small archives of text files may compress better
MAX_CONFIG_BYTES = 1 << 20          # config.json, tokenizer_config.json
MAX_TOKENIZER_BYTES = 64 << 20      # all tokenizer files together (kept for the exported folder)
