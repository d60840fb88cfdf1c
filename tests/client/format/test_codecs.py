"""Each codec has one home (#14): a module of `mpclient.format.codecs` holding its encode (the node's layout),
its numpy decode and its report name; nothing else builds a node of a named codec."""
from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import numpy as np
import pytest

from mpclient.format import codecs
from mpclient.format.codecs import affine, bitpacked, huffman
from mpclient.format.nodes import Encoded, Part

ROOT = Path(__file__).resolve().parents[3]
HOME = ROOT / "mpclient" / "format" / "codecs"


def test_every_codec_module_is_registered_with_its_three_functions():
    modules = {m.name for m in pkgutil.iter_modules([str(HOME)]) if not m.name.startswith("_")}
    assert modules == set(codecs.CODECS), modules ^ set(codecs.CODECS)
    for name, module in codecs.CODECS.items():
        assert module.NAME == name
        assert all(callable(getattr(module, f, None)) for f in ("encode", "decode", "describe")), name


def _named_node_builds(path: Path) -> list[int]:
    """Lines where `Encoded("<codec>", ...)` is called: a layout written outside its codec's module."""
    return [node.lineno for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Encoded"
            and node.args and isinstance(node.args[0], ast.Constant)]


def test_no_module_outside_the_codecs_writes_a_node_layout():
    found = {}
    for package in ("compression", "api", "workers", "core", "mpclient", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            if HOME not in path.parents and (lines := _named_node_builds(path)):
                found[str(path.relative_to(ROOT))] = lines
    assert not found, found


def _codes(values, storage):
    return Part(np.asarray(values), storage)


def test_an_encoded_node_decodes_through_its_own_module():
    node = affine.encode((2, 3), "float32", codes=_codes([1, -2, 3, 0, 4, -4], "int8"),
                         scales=_codes([0.5, 0.25], "float32"), bits=8, axis=0)
    parts = {k: p.data for k, p in node.parts.items()}
    out = codecs.decode_node(node.codec, node.shape, node.dtype, node.params, parts)
    np.testing.assert_array_equal(out, [[0.5, -1.0, 1.5], [0.0, 1.0, -1.0]])
    assert codecs.describe(node) == "int8 per_channel symmetric"


def test_huffman_codes_what_bitpacking_packs_and_both_decode_back():
    values = np.array([3, -1, 3, 3, 0, 3, 2, 3, -1, 3])
    stream, offset = huffman.code(values)
    coded = huffman.encode(values.size, "int8", stream=_codes(stream, "uint8"), offset=offset)
    packed = bitpacked.encode(values.size, "int8", data=_codes(bitpacked.pack(values, 3, 1), "uint8"), width=3,
                              offset=1)
    for node in (coded, packed):
        decoded = codecs.decode_node(node.codec, node.shape, node.dtype, node.params,
                                     {k: p.data for k, p in node.parts.items()})
        np.testing.assert_array_equal(decoded, values)


@pytest.mark.parametrize("kwargs", [{"group_size": 0, "axis": 0}, {"group_size": 64, "axis": None}])
def test_affine_refuses_a_group_layout_it_cannot_decode(kwargs):
    with pytest.raises(ValueError, match="group_size"):
        affine.encode((4, 128), "float32", codes=_codes(np.zeros(512, np.int8), "int8"),
                      scales=_codes(np.ones(8, np.float32), "float32"), bits=4, **kwargs)


def test_a_node_of_an_unknown_codec_is_named_not_decoded():
    node = Encoded("zstd", (2,), "float32", {}, {})
    assert codecs.describe(node) == "zstd"
    with pytest.raises(ValueError, match="unknown codec"):
        codecs.decode_node("zstd", (2,), "float32", {}, {})


def test_binary_and_affine_nodes_read_as_the_same_kind_of_integer_grid():
    from mpclient.format.codecs import sign
    signs = sign.encode((2, 2), "float32", signs=_codes(np.array([1, 0, 0, 1], np.uint8), "uint8"),
                        scales=_codes(np.array([0.5, 2.0], np.float32), "float32"), axis=0)
    parts = {k: p.data for k, p in signs.parts.items()}
    grid = sign.grid(signs.shape, signs.params, parts)
    np.testing.assert_array_equal(grid.codes, [[1, -1], [-1, 1]])
    # the grid's arithmetic is the decoder's: codes times the slice's scale
    np.testing.assert_array_equal(grid.codes * grid.scales[:, None],
                                  codecs.decode_node("sign", signs.shape, "float32", signs.params, parts))
    asym = affine.encode((2, 2), "float32", codes=_codes(np.array([0, 3, 15, 8], np.uint8), "uint4"),
                         scales=_codes(np.array([0.1, 0.2], np.float32), "float32"),
                         zero_points=_codes(np.array([3, 8], np.uint8), "uint4"), bits=4, axis=0, symmetric=False)
    grid = affine.grid(asym.shape, asym.params, {k: p.data for k, p in asym.parts.items()})
    assert (grid.bits, grid.symmetric, grid.axis, grid.group_size) == (4, False, 0, None)
    np.testing.assert_array_equal(grid.zero_points, [3, 8])


def test_sparse_entries_name_the_kept_positions():
    from mpclient.format import sparse_index
    from mpclient.format.codecs import sparse
    mask = np.zeros(40, bool)
    mask[[2, 3, 30]] = True
    gaps, values = sparse_index.encode(np.arange(40, dtype=np.float32), mask, 3)   # 3-bit gaps: a filler before 30
    positions, filler = sparse.entries({"bits": 3}, {"gaps": gaps})
    np.testing.assert_array_equal(positions[~filler], [2, 3, 30])
    assert filler.any()
