"""The container format, readable without torch: `load_state_dict("model.mpz")` -> numpy arrays.

Byte layout and manifest fields: CONTAINER.md in this folder. The service decodes with the same
`codecs` module, so what this reader returns is bitwise what the service verified.
"""
from mpclient.format.container import ContainerError, load_state_dict, read, read_manifest

__all__ = ["ContainerError", "load_state_dict", "read", "read_manifest"]
