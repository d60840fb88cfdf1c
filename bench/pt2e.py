"""torchao's pt2e int8 flow (X86InductorQuantizer; q/dq ops that inductor fuses into int8 kernels under
torch.compile), for side-by-side comparisons in bench/ only. Needs the `bench` extra (torchao)."""
from __future__ import annotations

import warnings

import torch


def _quantizer_class():
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
    )

    class Quantizer(X86InductorQuantizer):
        """torchao 0.18 fails on BERT's linear+GELU partitions (no output node, IndexError); those
        linears are then annotated as plain linears, which only loses the fused activation."""

        def _annotate_linear_unary(self, *args, **kwargs):
            try:
                return super()._annotate_linear_unary(*args, **kwargs)
            except IndexError:
                return None

    return Quantizer


def pt2e_quantize(model: torch.nn.Module, example: tuple, calibration: list[tuple] | None, *, dynamic: bool,
                  text: bool = False) -> torch.export.ExportedProgram:
    """Export (dynamic batch), quantize Linear/Conv with X86InductorQuantizer, convert, re-export."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        get_default_x86_inductor_quantization_config,
    )

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    _Quantizer = _quantizer_class()
    dims = tuple({0: batch} if isinstance(t, torch.Tensor) and t.ndim else None for t in example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(model, tuple(example), dynamic_shapes=dims).module()
        quantizer = _Quantizer().set_global(get_default_x86_inductor_quantization_config(is_dynamic=dynamic))
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for batch_inputs in calibration or [tuple(example)]:
                prepared(*batch_inputs)
        converted = convert_pt2e(prepared)
        return torch.export.export(converted, tuple(example), dynamic_shapes=dims)
