"""Structured matrices and compact/transferred filters (#18): exactness where it holds, shapes
through residual nets, and jobs whose artifacts rebuild from their bytes."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file
from torch import nn

from compression.errors import CompressionError
from compression.formats.architectures import build_architecture
from compression.formats.structure import apply_structure, build_module, describe_module
from compression.job.runner import run_compression_job
from compression.layers.structured_matrices import BlockCirculantLinear, ToeplitzLinear, project_block_circulant, \
    project_toeplitz
from compression.layers.transferred import TRANSFORMS, TransferredConv2d, fit_transferred
from compression.methods.compact_filters import CompactFiltersSpec, compact_filters, separable
from compression.methods.structured_matrix import StructuredMatrixSpec, structured_matrix
from compression.pipeline import parse_pipeline
from compression.stage import CompressionState


@pytest.mark.parametrize("block", [4, 16, 64, 100])   # 64 and 100 take the FFT path
def test_block_circulant_forward_is_the_dense_product_of_its_expanded_matrix(block):
    torch.manual_seed(0)
    layer = BlockCirculantLinear(70, 130, block)
    x = torch.randn(5, 3, 70)
    expected = x @ layer.dense_weight().T + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)
    w = layer.dense_weight()
    blocks = w[:block, :block] if block <= 70 else w[:block, :70]
    for i in range(blocks.shape[0]):   # the first block really is circulant: C[i, j] = c[(i - j) mod b]
        for j in range(blocks.shape[1]):
            assert blocks[i, j] == layer.weight[0, 0, (i - j) % block]


@pytest.mark.parametrize("block", [5, 16, 130])
def test_a_block_circulant_matrix_projected_stays_itself(block):
    torch.manual_seed(1)
    layer = BlockCirculantLinear(70, 130, block)
    w = layer.dense_weight().detach()
    with torch.no_grad():
        layer.weight.copy_(project_block_circulant(w, block))
    assert torch.allclose(layer.dense_weight(), w, atol=1e-6)
    # and a dense matrix is moved to its nearest block-circulant one: no closer point among perturbations
    dense = torch.randn(130, 70)
    with torch.no_grad():
        layer.weight.copy_(project_block_circulant(dense, block))
    best = (layer.dense_weight() - dense).norm()
    with torch.no_grad():
        layer.weight.add_(0.01 * torch.randn_like(layer.weight))
    assert (layer.dense_weight() - dense).norm() > best


def test_toeplitz_forward_projection_and_1x1_conv_form():
    torch.manual_seed(2)
    t = ToeplitzLinear(7, 5)
    x = torch.randn(3, 7)
    assert torch.allclose(t(x), x @ t.dense_weight().T + t.bias, atol=1e-6)
    d = t.dense_weight().detach()
    assert all(d[i, j] == d[i + 1, j + 1] for i in range(4) for j in range(6))
    assert torch.allclose(project_toeplitz(d), t.weight)
    conv = BlockCirculantLinear(8, 6, 4, conv1x1=True)
    x = torch.randn(2, 8, 3, 3)
    assert torch.allclose(conv(x), nn.functional.conv2d(x, conv.dense_weight()[:, :, None, None], conv.bias), atol=1e-6)


def test_transferred_bank_expands_to_the_stated_filters_and_a_transferred_layer_refits_exactly():
    torch.manual_seed(3)
    names = ["identity", "negate", "hflip", "rot90"]
    layer = TransferredConv2d(3, 8, 3, 2, names, padding=1)
    layer.which_base.copy_(torch.tensor([0, 1, 0, 1, 0, 1, 1, 0]))
    layer.which_transform.copy_(torch.tensor([0, 1, 2, 3, 1, 0, 2, 3]))
    f = layer.filters()
    assert torch.equal(f[1], -layer.weight[1]) and torch.equal(f[2], layer.weight[0].flip(-1))
    assert torch.equal(f[3], layer.weight[1].rot90(1, (-2, -1)))
    for name, (forward, inverse) in TRANSFORMS.items():
        assert torch.equal(inverse(forward(layer.weight)), layer.weight), name
    bank, which_base, which_t = fit_transferred(f.detach(), 2, names)
    refit = torch.stack([TRANSFORMS[names[t]][0](bank[b]) for b, t in zip(which_base, which_t)])
    assert torch.allclose(refit, f, atol=1e-6)


def test_separable_fit_is_exact_for_separable_filters_and_records_rebuild():
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    depth, point = torch.randn(4, 9), torch.randn(6, 4)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("oi,ik->oik", point, depth).reshape(6, 4, 3, 3))
    layer, fitted = separable(conv, 1)
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(fitted, conv.weight, atol=1e-5) and torch.allclose(layer(x), conv(x), atol=1e-4)
    full_rank, fitted = separable(nn.Conv2d(4, 6, 3, padding=1, stride=2), 9)   # rank kh*kw: any conv, exactly
    assert torch.allclose(full_rank(x), nn.functional.conv2d(x, fitted, full_rank.bias, 2, 1), atol=1e-5)
    for mod in (layer, full_rank, BlockCirculantLinear(10, 7, 4, bias=False, conv1x1=True), ToeplitzLinear(5, 9),
                TransferredConv2d(3, 8, 3, 4, ["identity", "hflip"], stride=2, padding=1)):
        rebuilt = build_module(describe_module(mod))
        assert describe_module(rebuilt) == describe_module(mod)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in mod.state_dict().items()}


def test_separable_layers_of_higher_rank_export_only_one_filter_per_channel_depthwise_convs(tmp_path):
    """A channel multiplier falls off runtimes' fast depthwise kernels (onnxruntime ran it at 0.6x the
    dense model's speed, bench/separable_forms.py): every grouped conv exported has as many groups as filters."""
    import onnx

    layer, fitted = separable(nn.Conv2d(8, 16, 3, padding=1), 3)
    x = torch.randn(2, 8, 12, 12)
    assert torch.allclose(layer(x), nn.functional.conv2d(x, fitted, layer.bias, 1, 1), atol=1e-5)
    torch.onnx.export(layer, (x,), tmp_path / "sep.onnx", dynamo=False)
    graph = onnx.load(tmp_path / "sep.onnx").graph
    weights = {t.name: t.dims for t in graph.initializer}
    grouped = [(next(a.i for a in n.attribute if a.name == "group"), weights[n.input[1]][0])
               for n in graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert grouped == [(8, 8)] * 3


def test_describe_refuses_unknown_transforms():
    desc = describe_module(TransferredConv2d(3, 8, 3, 4, ["identity", "hflip"]))
    desc["args"]["transforms"] = ["identity", "os.system"]
    with pytest.raises(CompressionError, match="transforms"):
        build_module(desc)


@pytest.mark.parametrize("spec", [{"form": "separable"}, {"form": "transferred", "transforms": ["negate", "hflip"]}])
def test_compact_filters_keep_shapes_through_a_residual_net_and_rebuild(spec):
    torch.manual_seed(5)
    model = build_architecture("small-resnet")
    state = CompressionState(model=model)
    decisions = compact_filters(CompactFiltersSpec(kind="compact_filters", **spec), state)
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    replaced = [d for d in decisions if d.replaced]
    assert len(replaced) >= 6   # every 3x3 conv of the stem and the blocks
    if spec["form"] == "separable":
        assert all(d.macs_ratio > 3 for d in replaced if d.name != "stem.0")
    else:
        for d in replaced:   # a base per three output filters (identity, negate, hflip)
            layer = model.get_submodule(d.name)
            assert layer.weight.shape[0] == -(-layer.out_channels // 3) and d.params_after == layer.weight.numel()
    rebuilt = apply_structure(build_architecture("small-resnet"), state.structure)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(rebuilt(x), model(x))


def test_structured_matrix_stage_choices_and_refusals():
    torch.manual_seed(6)
    model = build_architecture("lenet-300-100")
    state = CompressionState(model=model)
    decisions = structured_matrix(StructuredMatrixSpec(kind="structured_matrix", block_size=16, exclude=["fc3"]), state)
    assert [d.name for d in decisions] == ["fc1", "fc2"] and decisions[0].params_after == 49 * 19 * 16
    assert isinstance(model.fc1, BlockCirculantLinear) and isinstance(model.fc3, nn.Linear)
    with pytest.raises(CompressionError, match="replaced no layer"):
        structured_matrix(StructuredMatrixSpec(kind="structured_matrix", block_size=2, min_saving=0.9),
                          CompressionState(model=build_architecture("lenet-300-100")))
    with pytest.raises(CompressionError, match="selects no"):
        structured_matrix(StructuredMatrixSpec(kind="structured_matrix"),
                          CompressionState(model=nn.Sequential(nn.Conv2d(1, 4, 3))))
    with pytest.raises(ValidationError):
        StructuredMatrixSpec(kind="structured_matrix", block_size=1)
    with pytest.raises(ValidationError):
        CompactFiltersSpec(kind="compact_filters", transforms=["negate", "negate"])


@pytest.mark.parametrize("arch, stages", [
    ("lenet-300-100", [{"kind": "structured_matrix", "block_size": 16}, {"kind": "quantize", "dtype": "int8"}]),
    ("small-resnet", [{"kind": "compact_filters", "form": "transferred"}, {"kind": "quantize", "dtype": "int8"}]),
])   # (separable filters are plain Conv2d pairs: tests/e2e/test_stack_speed_methods.py runs them through REST)
def test_jobs_with_structured_stages_verify_from_their_bytes(arch, stages, tmp_path):
    torch.manual_seed(7)
    path = tmp_path / "in.safetensors"
    save_file({k: v.contiguous() for k, v in build_architecture(arch).state_dict().items()}, str(path))
    out = run_compression_job(path, "safetensors", {"architecture": arch}, parse_pipeline({"stages": stages}),
                              tmp_path / "out", measure_latency=False)
    m = out.metrics
    assert m["parameters_after"] < 0.6 * m["parameters_before"]   # transferred: half the 3x3 filters
    for name in ("model.mpz", "model.safetensors"):   # rebuilt from the architecture + structure record
        assert m["verification"][name]["weights_bitwise_equal"] is True
    assert m["exports"]["onnx"]["ok"] and m["verification"]["model.onnx"]["output_max_abs_diff"] < 1e-4
    assert m["verification"]["model.pt2"]["output_max_abs_diff"] < 1e-4
    sizes = {a.name: a.path.stat().st_size for a in out.artifacts}
    assert sizes["model.mpz"] < path.stat().st_size / 2


def test_the_fft_product_is_counted_not_free():
    """torch's flop counter has no FFT formulas; the job's MAC count adds them (and complex products at 4x)."""
    from compression.job.metrics import count_macs

    layer = BlockCirculantLinear(784, 300, 64)   # 5 x 13 blocks: the FFT path
    macs = count_macs(layer, (torch.randn(1, 784),))
    spectra_products = 4 * 5 * 13 * (64 // 2 + 1)   # real multiply-adds of the complex block products
    assert spectra_products + 13 * 64 < macs < 784 * 300
    assert count_macs(nn.Linear(784, 300), (torch.randn(1, 784),)) == 784 * 300
