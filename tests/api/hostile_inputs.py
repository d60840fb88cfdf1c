"""Hostile inputs, kept as data: each entry is a request the service must refuse with a 4xx that says
why, storing nothing and showing nothing of another tenant (tests/api/test_hostile_inputs.py runs every
entry on the embedded default, tests/api/test_option_injection.py all of them on PostgreSQL + Redis).

An entry: {"name", "request", "status", "says"}. `request` is either JSON ({"method", "path", "json"} or a
raw "body" string) or an upload ({"upload": path, "file": a file kind, "filename", "form"}); file kinds are
built by the runner ("lenet", "digits", "zip-10k-hf", "zip-10k-plain", "zip-bomb"). Placeholders in any
string: {mine.model}, {mine.dataset} (the caller's own objects), {theirs.model}, {theirs.dataset} (another
tenant's). Add an entry here for every new kind of hostile input; the test ids are the names.
"""
from __future__ import annotations

import json

from compression.formats.options import RESERVED_KEYS

INTERNAL = sorted(RESERVED_KEYS | {"model_path", "model_options", "teacher", "datasets", "checkpoint_dir"})
HOSTILE = ["/etc/hostname", "safetensors", {"architecture": "lenet-300-100"}]
ALLOW = "MODELPRESS_WEBHOOK_ALLOW_HOSTS"
FINETUNE = {"stages": [{"kind": "finetune", "epochs": 1}]}


def job(**body) -> dict:
    """A job body (recipe=None drops the default recipe)."""
    fields = {"model_id": "{mine.model}", "recipe": "int8", **body}
    return {"method": "POST", "path": "/v1/jobs", "json": {k: v for k, v in fields.items() if v is not None}}


def raw_job(text: str) -> dict:
    return {"method": "POST", "path": "/v1/jobs", "body": text}


def model_upload(file: str = "lenet", filename: str = "model.safetensors", **form) -> dict:
    return {"upload": "/v1/models", "file": file, "filename": filename, "form": {"architecture": "lenet-300-100",
                                                                                  **form}}


def dataset_upload(file: str = "digits", filename: str = "data.npz") -> dict:
    return {"upload": "/v1/datasets", "file": file, "filename": filename, "form": {}}


def entry(name: str, request: dict, status: int, says: str) -> dict:
    return {"name": name, "request": request, "status": status, "says": says}


OPTION_INJECTION = [   # internal wiring named by users, at every entry point (issue #13)
    *(entry(f"option-injection/upload-options/{key}", model_upload(options=json.dumps({key: HOSTILE})), 422,
            f"options.{key}") for key in INTERNAL),
    *(entry(f"option-injection/upload-form-field/{key}", model_upload(**{key: json.dumps(HOSTILE)}), 422, key)
      for key in INTERNAL),
    *(entry(f"option-injection/job-body/{key}", job(**{key: HOSTILE}), 422, key) for key in INTERNAL),
    *(entry(f"option-injection/job-data/{key}", job(data={key: HOSTILE}), 422, key) for key in INTERNAL),
    *(entry(f"option-injection/pipeline/{key}", job(recipe=None, pipeline={"stages": [{"kind": "int8"}],
                                                                            key: HOSTILE}), 422, key)
      for key in INTERNAL),
    *(entry(f"option-injection/stage/{key}", job(recipe=None, pipeline={"stages": [{"kind": "int8", key: HOSTILE}]}),
            422, key) for key in INTERNAL),
    entry("option-injection/reserved-key-named-as-such", model_upload(options='{"teacher_file": "/x"}'), 422,
          "reserved"),
    entry("option-values/input-shape-as-path", model_upload(options='{"input_shape": "/etc/passwd"}'), 422,
          "input_shape"),
    entry("option-values/sample-dataset-traversal", model_upload(options='{"sample_dataset": "../../etc/passwd"}'),
          422, "sample_dataset"),
    entry("option-values/not-an-object", model_upload(options="[1, 2]"), 422, "JSON object"),
    entry("option-values/negative-dim", model_upload(options='{"input_shapes": {"x": [1, -1]}}'), 422,
          "input_shapes"),
    entry("option-values/object-dtype", model_upload(options='{"input_dtype": "object"}'), 422, "input_dtype"),
]

OVERSIZED_JSON = [
    entry("oversized-json/job-body-over-the-limit", job(recipe="x" * (1 << 20)), 413, "MODELPRESS_MAX_JSON_BODY_BYTES"),
    entry("oversized-json/upload-options-field", model_upload(options=json.dumps({"input_shape": [1] * 40000})),
          413, "too large"),
    entry("oversized-json/twenty-thousand-stages", job(recipe=None, pipeline={"stages": [{"kind": "fp16"}] * 20000}),
          422, "at most 16"),
    entry("oversized-json/deep-nesting-job", raw_job('{"model_id": "{mine.model}", "pipeline": '
                                                     + "[" * 50000 + "]" * 50000 + "}"), 422, "nested too deeply"),
    entry("oversized-json/deep-nesting-upload-options", model_upload(options="[" * 20000 + "]" * 20000), 422,
          "nested too deeply"),
    entry("non-finite/nan-quality-bar", raw_job('{"model_id": "{mine.model}", "recipe": "int8", '
                                                '"quality": {"metric": "cosine", "min": NaN}}'), 422, "finite"),
    entry("non-finite/overflowing-number", raw_job('{"model_id": "{mine.model}", "recipe": "int8", '
                                                   '"quality": {"max_drop": 1e400}}'), 422, "finite"),
    entry("non-finite/infinity-in-a-stage", raw_job('{"model_id": "{mine.model}", "pipeline": {"stages": '
                                                    '[{"kind": "prune", "sparsity": -Infinity}]}}'), 422, "finite"),
    entry("non-finite/nan-upload-option", model_upload(options='{"input_values": {"sr": NaN}}'), 422, "finite"),
    entry("non-finite/tenant-settings", {"method": "PATCH", "path": "/v1/tenant/settings",
                                         "body": '{"artifact_retention_days": Infinity}'}, 422, "finite"),
]

FILENAMES = [
    entry("filename/bidi-override", model_upload(filename="model\u202etxt.safetensors"), 422, "bidirectional"),
    entry("filename/terminal-escape", model_upload(filename="\x1b]0;owned\x07\x1b[2Jmodel.safetensors"), 422,
          "control"),
    entry("filename/path-traversal", model_upload(filename="../../etc/passwd"), 422, "path separators"),
    entry("filename/windows-path", model_upload(filename="..\\..\\boot.ini"), 422, "path separators"),
    entry("filename/dataset-bidi-override", dataset_upload(filename="digits\u202eypn.npz"), 422, "bidirectional"),
]

ARCHIVES = [   # each well under MODELPRESS_MAX_UPLOAD_BYTES
    entry("zip/10k-members-hf-folder", model_upload(file="zip-10k-hf", filename="m.zip"), 422, "too many members"),
    entry("zip/10k-members-plain", model_upload(file="zip-10k-plain", filename="m.zip"), 415, "config.json"),
    entry("zip/10k-members-as-dataset", dataset_upload(file="zip-10k-plain", filename="d.npz"), 422, "members"),
    entry("zip/ratio-bomb", model_upload(file="zip-bomb", filename="m.zip"), 422, "zip bomb"),
]

PRIVATE = ["http://127.0.0.1/hook", "http://localhost:8080/hook", "http://10.0.0.7/", "http://172.16.5.4/",
           "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
           "http://[::ffff:127.0.0.1]/", "http://2130706433/", "http://0x7f.1/", "http://0.0.0.0/",
           "http://100.64.0.1/", "http://224.0.0.1/", "http://[fe80::1]/", "http://[fc00::1]/"]
CALLBACKS = [
    *(entry(f"callback-url/{url.split('/')[2]}", job(callback_url=url), 422, ALLOW) for url in PRIVATE),
    entry("callback-url/credentials", job(callback_url="https://user:pw@hooks.example.com/"), 422, "credentials"),
    entry("callback-url/file-scheme", job(callback_url="file:///etc/passwd"), 422, "http"),
    entry("callback-url/gopher-scheme", job(callback_url="gopher://127.0.0.1:6379/_FLUSHALL"), 422, "http"),
    entry("callback-url/too-long", job(callback_url="https://example.com/" + "a" * 3000), 422, "2048"),
    entry("callback-url/tenant-default-private", {"method": "PATCH", "path": "/v1/tenant/settings",
                                                  "json": {"callback_url": "http://10.0.0.7/"}}, 422, ALLOW),
]

OTHER_TENANTS_IDS = [   # every body field that takes an id: another tenant's is a 404, like a missing one
    entry("other-tenant/model_id", job(model_id="{theirs.model}"), 404, "not found"),
    entry("other-tenant/teacher_model_id", job(recipe=None, pipeline=FINETUNE, teacher_model_id="{theirs.model}",
                                               data={"train": "{mine.dataset}"}), 404, "not found"),
    *(entry(f"other-tenant/data.{role}", job(recipe=None, pipeline=FINETUNE,
                                             data={"train": "{mine.dataset}", role: "{theirs.dataset}"}),
            404, "not found") for role in ("calibration", "train", "eval")),
    entry("other-tenant/options.sample_dataset",
          model_upload(options='{"sample_dataset": "{theirs.dataset}"}'), 404, "not found"),
]

ENTRIES = [*OPTION_INJECTION, *OVERSIZED_JSON, *FILENAMES, *ARCHIVES, *CALLBACKS, *OTHER_TENANTS_IDS]
assert len({e["name"] for e in ENTRIES}) == len(ENTRIES), "entry names are test ids: keep them unique"

# {backend: {"tried", "refused", "leaked"}}, printed at the end of the session (tests/conftest.py)
TALLY: dict[str, dict[str, int]] = {}


def report() -> list[str]:
    return [f"hostile inputs ({backend}): tried {t['tried']}, refused {t['refused']}, leaked {t['leaked']}"
            for backend, t in TALLY.items()]
