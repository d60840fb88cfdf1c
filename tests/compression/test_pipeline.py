from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from compression.pipeline import PipelineSpec, check_pipeline_against_model, parse_pipeline
from compression.registry import RECIPES, method_schemas


def _error(data: dict) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        parse_pipeline(data)
    return info.value.errors()


def test_every_recipe_parses_and_its_dump_parses_again():
    assert {"fp16", "int8", "int8-per-tensor"} <= set(RECIPES)
    for recipe in RECIPES.values():
        spec = parse_pipeline({"stages": recipe.stages})
        assert isinstance(spec, PipelineSpec)
        assert parse_pipeline(spec.model_dump(mode="json")) == spec   # the worker re-parses the stored dump


def test_defaults_and_json_round_trip():
    spec = parse_pipeline({"stages": [{"kind": "quantize", "dtype": "int8"}]})
    dumped = spec.model_dump(mode="json")
    assert dumped["seed"] == 0 and dumped["stages"][0]["version"] == 1
    assert parse_pipeline(dumped) == spec


@pytest.mark.parametrize("stage, field", [
    ({"kind": "quantize", "dtype": "int5"}, "dtype"),
    ({"kind": "quantize", "dtype": "int8", "bits": 8}, "bits"),
    ({"kind": "quantize", "dtype": "int8", "granularity": "per_row"}, "granularity"),
    ({"kind": "quantize", "dtype": "int8", "version": 2}, "version"),
    ({"kind": "quantize", "dtype": "int8", "exclude": [""]}, "exclude"),
])
def test_bad_fields_are_named(stage, field):
    errors = _error({"stages": [stage]})
    assert any(field in map(str, e["loc"]) for e in errors), errors


def test_unknown_kind_and_structure():
    assert _error({"stages": [{"kind": "no-such"}]})[0]["type"] == "union_tag_invalid"
    assert _error({"stages": []})[0]["loc"] == ("stages",)
    assert _error({"stages": [{"kind": "quantize", "dtype": "int8"}], "extra": 1})[0]["loc"] == ("extra",)
    assert _error({"stages": [{"kind": "quantize", "dtype": "int8"}], "seed": -1})[0]["loc"] == ("seed",)


def test_float_dtypes_reject_int_options():
    assert "int8/int4/int3 only" in _error({"stages": [{"kind": "quantize", "dtype": "fp16", "symmetric": False}]})[0]["msg"]
    assert "int8/int4/int3 only" in _error({"stages": [{"kind": "quantize", "dtype": "bf16",
                                                   "granularity": "per_tensor"}]})[0]["msg"]


def test_ordering_rule_one_values_stage():
    errors = _error({"stages": [{"kind": "quantize", "dtype": "int8"}, {"kind": "quantize", "dtype": "fp16"}]})
    assert "at most one values-phase stage" in errors[0]["msg"]


def test_check_against_model_summary():
    spec = parse_pipeline({"stages": [{"kind": "quantize", "dtype": "int8", "exclude": ["fc3", "nope*"]}]})
    summary = {"layers": [{"name": n} for n in ("fc1.weight", "fc1.bias", "fc3.weight")], "layers_complete": True}
    problems = check_pipeline_against_model(spec, summary)
    assert len(problems) == 1 and "'nope*'" in problems[0]
    assert check_pipeline_against_model(spec, {**summary, "layers_complete": False}) == []


@pytest.mark.parametrize("fmt, stage, fix", [
    ("torchscript", {"kind": "low_rank", "energy": 0.9}, "export the model with torch.export"),
    ("torch-export", {"kind": "structured_prune", "ratio": 0.5}, "fixed in its graph"),
])
def test_architecture_changes_a_program_cannot_take_are_refused_at_submit(fmt, stage, fix):
    spec = parse_pipeline({"stages": [stage, {"kind": "quantize", "dtype": "int8"}]})
    problems = check_pipeline_against_model(spec, {"format": fmt, "layers": [], "layers_complete": False})
    assert len(problems) == 1 and f"stage 0 ({stage['kind']})" in problems[0] and fix in problems[0]
    assert check_pipeline_against_model(spec, {"format": "safetensors", "layers_complete": False}) == []


def test_layer_swaps_are_accepted_for_torch_export_programs():
    """Their layers are lifted to modules, so low_rank / structured_matrix / compact_filters run on them."""
    for stage in ({"kind": "low_rank", "energy": 0.9}, {"kind": "structured_matrix"},
                  {"kind": "compact_filters", "form": "separable"}):
        spec = parse_pipeline({"stages": [stage]})
        assert check_pipeline_against_model(spec, {"format": "torch-export", "layers_complete": False}) == []


def test_architecture_stages_come_before_value_stages():
    ok = {"stages": [{"kind": "prune", "sparsity": 0.5}, {"kind": "quantize", "dtype": "int8"},
                     {"kind": "huffman"}]}
    parse_pipeline(ok)
    errors = _error({"stages": [{"kind": "quantize", "dtype": "int8"}, {"kind": "low_rank", "energy": 0.9}]})
    assert "cannot come after" in errors[0]["msg"]


def test_method_schemas_are_json_schema_with_descriptions():
    schemas = method_schemas()
    q = schemas["quantize"]
    json.dumps(schemas)
    assert q["additionalProperties"] is False
    assert set(q["properties"]["dtype"]["enum"]) == {"fp16", "bf16", "int8", "int4", "int3", "binary", "ternary", "fixed16"}
    assert q["properties"]["symmetric"]["default"] is True and "description" in q["properties"]["exclude"]


def test_inspected_module_types_make_inapplicable_stages_a_submit_problem():
    inspection = {"modules_complete": True, "modules": [{"name": "fc1", "type": "Linear"},
                                                        {"name": "fc2", "type": "Linear"}]}
    summary = {"format": "safetensors", "layers_complete": False, "inspection": inspection}
    conv_only = parse_pipeline({"stages": [{"kind": "low_rank", "energy": 0.9, "layer_types": ["conv"]}]})
    problems = check_pipeline_against_model(conv_only, summary)
    assert len(problems) == 1 and "no such layer" in problems[0] and "Linear" in problems[0]
    heads = parse_pipeline({"stages": [{"kind": "structured_prune", "ratio": 0.2, "heads_ratio": 0.5}]})
    assert "attention" in check_pipeline_against_model(heads, summary)[0]
    fine = parse_pipeline({"stages": [{"kind": "low_rank", "energy": 0.9}]})
    assert check_pipeline_against_model(fine, summary) == []
    assert check_pipeline_against_model(conv_only, {**summary, "inspection": None}) == []   # not inspected yet
