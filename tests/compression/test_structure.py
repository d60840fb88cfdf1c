"""Architecture edits recorded as data replay onto a fresh model exactly; hostile records are refused."""
import pytest
import torch
from torch import nn

from compression.errors import CompressionError
from compression.formats.structure import apply_structure, build_module, describe_module, leaf_shapes, record_replacement, \
    record_resized


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 10))


def test_replayed_edits_rebuild_the_edited_model():
    model = _net()
    edits: list[dict] = []
    record_replacement(edits, model, "4", nn.Sequential(nn.Linear(128, 6, bias=False), nn.Linear(6, 10)))
    before = leaf_shapes(model)
    model[0] = nn.Conv2d(1, 6, 3, padding=1)   # an in-place shrink, as Torch-Pruning does it
    model[1] = nn.BatchNorm2d(6)
    model[4][0] = nn.Linear(96, 6, bias=False)
    assert record_resized(edits, model, before) == ["0", "1", "4.0"]
    rebuilt = apply_structure(_net(), edits)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 4, 4)
    model.eval(), rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))


def test_keep_children_and_set_attrs():
    model = nn.Sequential(nn.ModuleList([nn.Linear(2, 2) for _ in range(4)]))
    apply_structure(model, [{"op": "keep_children", "module": "0", "indices": [0, 2]},
                            {"op": "set_attrs", "module": "0.1", "attrs": {"num_attention_heads": 3}}])
    assert len(model[0]) == 2 and model[0][1].num_attention_heads == 3


@pytest.mark.parametrize("edit", [
    {"op": "replace", "module": "0", "with": {"type": "os.system", "args": {}}},
    {"op": "replace", "module": "0", "with": {"type": "Linear", "args": {"in_features": 2, "evil": 1}}},
    {"op": "replace", "module": "0", "with": {"type": "Linear", "args": {"in_features": {"x": 1}, "out_features": 2}}},
    {"op": "set_attrs", "module": "0", "attrs": {"forward": 1}},
    {"op": "set_attrs", "module": "0", "attrs": {"num_heads": "3"}},
    {"op": "keep_children", "module": "0", "indices": [9]},
    {"op": "exec", "module": "0"},
    {"op": "replace", "module": "nope.deeper", "with": {"type": "Identity"}},
])
def test_hostile_records_are_refused(edit):
    model = nn.Sequential(nn.ModuleList([nn.Linear(2, 2)]))
    with pytest.raises(CompressionError):
        apply_structure(model, [edit])


def test_unrecordable_module_is_named():
    with pytest.raises(CompressionError, match="ReLU"):
        describe_module(nn.ReLU())
    assert isinstance(build_module({"type": "Identity"}), nn.Identity)
