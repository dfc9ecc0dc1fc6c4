#!/usr/bin/env python3
"""Serve an exported model folder with FastAPI, uvicorn and ONNX Runtime: the custom Python baseline.

The server most ML teams write first: one process (or --workers processes sharing the port),
each with one onnxruntime.InferenceSession made at start-up (CPU, --threads intra-op threads,
one inter-op thread) and the folder's tokenizer.json read by Hugging Face `tokenizers`. No
batching: every request is one session.run, run in Starlette's thread pool so that the event
loop (uvloop, httptools) keeps accepting requests. FastAPI 0.165, uvicorn 0.54, ONNX Runtime
1.31.1 and tokenizers live in .venv-fastapi, made by `scripts/setup.sh fastapi`; any
interpreter may start the script: without FastAPI it runs itself under .venv-fastapi's.

It speaks what the harness's own server speaks, bound to 127.0.0.1:

    GET  /v2/health/live, /v2/health/ready, /v2 (server metadata)
    GET  /v2/models/NAME[/versions/1]          model metadata: KServe datatypes, shapes with
                                               -1 for dynamic dims, parameters.vocab_size and
                                               type_vocab_size and max_position_embeddings
                                               (manifest.json, else config.json)
    GET  /v2/models/NAME[/versions/1]/ready
    POST /v2/models/NAME[/versions/1]/infer    KServe v2 JSON, or the binary tensor extension
                                               (Inference-Header-Content-Length: JSON header,
                                               then little-endian tensors in input order);
                                               binary answers when the request asks
                                               (parameters.binary_data_output, or an output's
                                               parameters.binary_data)
    POST /v1/embeddings                        OpenAI embeddings: the model's tokenizer,
                                               truncation to max_seq_length, the pooling of
                                               1_Pooling/config.json, L2 normalisation when
                                               modules.json lists Normalize
    GET  /v1/models
    GET  /metrics                              Prometheus text, below

A bad request is a 400 whose JSON names the problem ({"error": "..."} on /v2,
{"object": "error", "message": "...", ...} on /v1, as vLLM answers); an unknown model is a 404.

Metrics (per process: with --workers above 1 a scrape reads whichever worker answers). The
inference counters carry NVIDIA Triton's names, which the harness's server shares, so that
`harness load --metrics-url` reads queue and compute time per request from this server too;
labels model="NAME",version="1":

    nv_inference_request_success            infer and embeddings requests answered 200
    nv_inference_request_failure            ... answered otherwise
    nv_inference_count                      rows inferred
    nv_inference_exec_count                 session.run calls
    nv_inference_request_duration_us        summed time from the handler's start to the
                                            encoded answer, microseconds
    nv_inference_queue_duration_us          summed time from the handler's start until a
                                            thread-pool thread took the request
    nv_inference_compute_infer_duration_us  summed session.run time (the inference time)
    fastapi_serve_responses_total           answers by endpoint and status code

Once the model is loaded and the port answers the script prints one line on stdout,

    ready http=PORT model=NAME

and nothing else: logs go to stderr (uvicorn's access log is off). It exits 0 on SIGTERM or
SIGINT (after in-flight requests finish, at most 5 s), or by itself --shutdown-after seconds
after it started.

Usage:
    python models/fastapi_serve.py --model DIR [--name NAME] [--http-port 8000]
        [--threads N] [--workers 1] [--shutdown-after SECONDS]
"""

import argparse
import base64
import json
import os
import signal
import sys
import threading
import time

HOST = "127.0.0.1"
READY_TIMEOUT_S = 120.0
GRACEFUL_SHUTDOWN_S = 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASTAPI_VENV = os.path.join(ROOT, ".venv-fastapi")
NEEDED = ("fastapi", "uvicorn", "onnxruntime", "tokenizers", "numpy")
# The server's settings, handed to --workers processes (they import this file afresh).
CONFIG_ENV = "FASTAPI_SERVE_CONFIG"
# uvicorn's exit code for a worker that cannot start: its supervisor then stops, not retries.
STARTUP_FAILURE = 3
# Most inputs in one embeddings request (OpenAI's own limit).
MAX_EMBED_INPUTS = 2048


def ensure_fastapi_environment():
    """Started by an interpreter without FastAPI (the harness's .venv, say), the script starts
    itself again under .venv-fastapi's."""
    import importlib.util

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        return
    python = os.path.join(FASTAPI_VENV, "bin", "python")
    if os.access(python, os.X_OK) and os.path.realpath(sys.prefix) != os.path.realpath(FASTAPI_VENV):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])
    raise SystemExit(
        f"fastapi_serve.py: this interpreter lacks {', '.join(missing)} and "
        f"{FASTAPI_VENV} is missing; run scripts/setup.sh fastapi (it makes .venv-fastapi)"
    )


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="exported model folder (holds model.onnx)")
    p.add_argument("--name", help="model name served (default: the folder's name)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime intra-op threads per process (0: the CPUs this process may use, "
        "divided among the workers)",
    )
    p.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    p.add_argument(
        "--shutdown-after",
        type=float,
        metavar="SECONDS",
        help="stop by itself this many seconds after starting",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (stderr)",
    )
    a = p.parse_args(argv)
    if a.threads < 0:
        p.error("--threads must not be negative")
    if a.workers < 1:
        p.error("--workers must be at least 1")
    if not 0 <= a.http_port <= 65535:
        p.error("--http-port must be a TCP port")
    if a.shutdown_after is not None and a.shutdown_after <= 0:
        p.error("--shutdown-after must be positive")
    onnx_path = os.path.join(a.model, "model.onnx")
    if not os.path.isfile(onnx_path):
        p.error(f"{onnx_path} not found: --model must be a folder made by models/export.py")
    a.model = os.path.abspath(a.model)
    a.name = a.name or os.path.basename(os.path.normpath(a.model))
    a.threads = a.threads or max(1, cpu_count() // a.workers)
    return a


# ---------------------------------------------------------------------------------------------
# The model: its signature, and the KServe datatypes.

# ONNX element types (as ONNX Runtime spells them) -> (KServe datatype, numpy dtype).
ONNX_TYPES = {
    "tensor(bool)": ("BOOL", "bool"),
    "tensor(uint8)": ("UINT8", "uint8"),
    "tensor(uint16)": ("UINT16", "uint16"),
    "tensor(uint32)": ("UINT32", "uint32"),
    "tensor(uint64)": ("UINT64", "uint64"),
    "tensor(int8)": ("INT8", "int8"),
    "tensor(int16)": ("INT16", "int16"),
    "tensor(int32)": ("INT32", "int32"),
    "tensor(int64)": ("INT64", "int64"),
    "tensor(float16)": ("FP16", "float16"),
    "tensor(float)": ("FP32", "float32"),
    "tensor(double)": ("FP64", "float64"),
}
KSERVE_DTYPES = {k: d for k, d in ONNX_TYPES.values()}


class BadRequest(Exception):
    """A request the server refuses, with its HTTP status; the message names the problem."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status


class TensorSpec:
    def __init__(self, name, datatype, dims):
        self.name = name
        self.datatype = datatype  # KServe name
        self.dims = dims  # int for a fixed size, str (a symbol) or None for a dynamic one

    def shape_json(self):
        return [d if isinstance(d, int) and d >= 0 else -1 for d in self.dims]

    def dims_string(self):
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def positive_int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


class Model:
    """One process's model: the ONNX Runtime session and what the folder says about it."""

    def __init__(self, folder, name, threads):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            os.path.join(folder, "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        self.name = name
        self.threads = threads
        self.inputs = [self._spec(a, "input") for a in self.session.get_inputs()]
        self.outputs = [self._spec(a, "output") for a in self.session.get_outputs()]
        manifest = read_json(os.path.join(folder, "manifest.json")) or {}
        config = read_json(os.path.join(folder, "config.json")) or {}

        def setting(*keys):
            for source in (manifest, config):
                for k in keys:
                    if positive_int(source.get(k)):
                        return source[k]
            return None

        self.vocab_size = setting("vocab_size")
        self.type_vocab_size = setting("type_vocab_size")
        self.max_positions = positive_int(manifest.get("max_sequence_length")) or setting(
            "max_position_embeddings"
        )
        try:
            self.embedder = Embedder(folder, self.max_positions)
        except ValueError as e:
            self.embedder = None
            self.embedder_error = str(e)

    @staticmethod
    def _spec(arg, kind):
        if arg.type not in ONNX_TYPES:
            raise SystemExit(f"fastapi_serve.py: {kind} {arg.name} has type {arg.type}, not served")
        dims = [d if isinstance(d, (int, str)) else None for d in (arg.shape or [])]
        return TensorSpec(arg.name, ONNX_TYPES[arg.type][0], dims)

    def metadata(self):
        t = lambda specs: [  # noqa: E731
            {"name": s.name, "datatype": s.datatype, "shape": s.shape_json()} for s in specs
        ]
        meta = {
            "name": self.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": t(self.inputs),
            "outputs": t(self.outputs),
        }
        params = {}
        if self.vocab_size:
            params["vocab_size"] = self.vocab_size
        if self.type_vocab_size:
            params["type_vocab_size"] = self.type_vocab_size
        if self.max_positions:
            params["max_position_embeddings"] = self.max_positions
        if params:
            meta["parameters"] = params
        return meta


# ---------------------------------------------------------------------------------------------
# KServe v2 requests and answers.


def elements(shape):
    n = 1
    for d in shape:
        if d < 0:
            raise BadRequest(f"shape {shape} has a negative dimension; give the actual sizes")
        n *= d
    if n > 1 << 40:
        raise BadRequest(f"shape {shape} is too large")
    return n


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def json_array(name, datatype, dtype, data, shape):
    """Nested or flat JSON data as an array of `shape`, refusing values of the wrong kind."""
    import numpy as np

    n = elements(shape)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as e:
        raise BadRequest(f"input '{name}': data is not a regular array of numbers ({e})")
    if arr.size != n:
        raise BadRequest(f"input '{name}': data holds {arr.size} values, the shape needs {n}")
    if n:
        want = dtype.kind
        ok = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[want]
        if arr.dtype.kind not in ok:
            what = {"b": "true or false", "i": "integers", "u": "integers", "f": "numbers"}[want]
            raise BadRequest(f"input '{name}': data holds values that are not {what} (datatype {datatype})")
        if want in "iu":
            info = np.iinfo(dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise BadRequest(f"input '{name}': a value is outside the range of {datatype}")
    return arr.astype(dtype, copy=False).reshape(shape)


def binary_array(name, datatype, dtype, chunk, shape):
    import numpy as np

    n = elements(shape)
    want = n * dtype.itemsize
    if len(chunk) != want:
        raise BadRequest(
            f"input '{name}': {len(chunk)} bytes given, the shape needs {want} "
            f"({n} elements of {dtype.itemsize} bytes)"
        )
    return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).reshape(shape)


def decode_infer(body, header_len):
    """A KServe v2 infer body: JSON, or with `header_len` a JSON header then binary tensors.
    Returns (id, [(name, datatype, array)], outputs wanted or None, binary for all outputs)."""
    import numpy as np

    if header_len is not None:
        if header_len > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {header_len} but the body has only {len(body)} bytes"
            )
        head, binary = body[:header_len], memoryview(body)[header_len:]
    else:
        head, binary = body, memoryview(b"")
    try:
        req = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request is not a KServe v2 infer request: the JSON is not valid ({e})")
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise BadRequest("the request is not a KServe v2 infer request: 'inputs' (a list) is required")
    params = req.get("parameters") if isinstance(req.get("parameters"), dict) else {}
    binary_all = params.get("binary_data_output") is True
    inputs = []
    for i in req["inputs"]:
        if not isinstance(i, dict):
            raise BadRequest("the request is not a KServe v2 infer request: each input is an object")
        name, datatype, shape = i.get("name"), i.get("datatype"), i.get("shape")
        if not isinstance(name, str):
            raise BadRequest("an input has no 'name' (a string)")
        if not isinstance(datatype, str):
            raise BadRequest(f"input '{name}' has no 'datatype' (a string)")
        if not isinstance(shape, list) or not all(is_int(d) for d in shape):
            raise BadRequest(f"input '{name}' has no 'shape' (a list of integers)")
        if datatype not in KSERVE_DTYPES:
            raise BadRequest(
                f"input '{name}': unknown datatype '{datatype}' ({', '.join(KSERVE_DTYPES)})"
            )
        dtype = np.dtype(KSERVE_DTYPES[datatype])
        ip = i.get("parameters") if isinstance(i.get("parameters"), dict) else {}
        if "binary_data_size" in ip:
            size = ip["binary_data_size"]
            if not is_int(size) or size < 0:
                raise BadRequest(f"input '{name}': binary_data_size must be a byte count")
            if size > len(binary):
                raise BadRequest(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({len(binary)} bytes left)"
                )
            arr = binary_array(name, datatype, dtype, binary[:size], shape)
            binary = binary[size:]
        elif "data" in i:
            arr = json_array(name, datatype, dtype, i["data"], shape)
        else:
            raise BadRequest(f"input '{name}' has neither data nor binary_data_size")
        inputs.append((name, datatype, arr))
    if len(binary):
        raise BadRequest(f"{len(binary)} bytes after the last binary input belong to no input")
    outputs = None
    if req.get("outputs") is not None:
        if not isinstance(req["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for o in req["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest("each of 'outputs' needs a 'name' (a string)")
            op = o.get("parameters") if isinstance(o.get("parameters"), dict) else {}
            outputs.append((o["name"], op.get("binary_data") is True))
    rid = req.get("id")
    return (rid if isinstance(rid, str) else None), inputs, outputs, binary_all


def validate(model, raw):
    """Checks decoded inputs against the model; the feeds in the model's order."""
    names = ", ".join(s.name for s in model.inputs)
    seen = set()
    for name, _, _ in raw:
        if not any(s.name == name for s in model.inputs):
            raise BadRequest(f"unknown input '{name}'; model '{model.name}' takes {names}")
        if name in seen:
            raise BadRequest(f"input '{name}' is given twice")
        seen.add(name)
    given = {name: (dt, arr) for name, dt, arr in raw}
    feeds = {}
    rows = None
    symbols = {}
    for spec in model.inputs:
        if spec.name not in given:
            raise BadRequest(f"input '{spec.name}' is missing; model '{model.name}' takes {names}")
        datatype, arr = given[spec.name]
        if datatype != spec.datatype:
            raise BadRequest(f"input '{spec.name}' is {datatype}, the model takes {spec.datatype}")
        shape = list(arr.shape)
        if len(shape) != len(spec.dims):
            raise BadRequest(
                f"input '{spec.name}' has shape {shape}; the model takes rank {len(spec.dims)} "
                f"{spec.dims_string()}"
            )
        for k, (got, d) in enumerate(zip(shape, spec.dims)):
            if isinstance(d, int) and d >= 0 and got != d:
                raise BadRequest(
                    f"input '{spec.name}' dimension {k} is {got}, the model fixes it at {d}"
                )
        if shape and shape[0] == 0:
            raise BadRequest(f"input '{spec.name}' has no rows")
        if len(shape) >= 2 and shape[1] == 0:
            raise BadRequest(f"input '{spec.name}' is empty")
        if shape:
            if rows is None:
                rows = shape[0]
            elif shape[0] != rows:
                raise BadRequest(
                    f"input '{spec.name}' has {shape[0]} rows, the others {rows}; "
                    "every input needs the same batch size"
                )
        for k, (got, d) in enumerate(zip(shape, spec.dims)):
            if k == 0 or not isinstance(d, str):
                continue
            if d in symbols and symbols[d][0] != got:
                v, other = symbols[d]
                raise BadRequest(
                    f"input '{spec.name}' dimension {k} ('{d}') is {got}, but input '{other}' "
                    f"has {v}: inputs must agree on '{d}'"
                )
            symbols.setdefault(d, (got, spec.name))
        if (
            model.max_positions
            and len(shape) >= 2
            and not isinstance(spec.dims[1], int)
            and shape[1] > model.max_positions
        ):
            raise BadRequest(
                f"input '{spec.name}' is {shape[1]} tokens long; the model takes at most "
                f"{model.max_positions}"
            )
        check_ids(model, spec.name, arr)
        feeds[spec.name] = arr
    return feeds, rows or 1


def check_ids(model, name, arr):
    """Token ids beyond the vocabulary would fail inside ONNX Runtime; say so up front."""
    lname = name.lower()
    limit = {"input_ids": model.vocab_size, "token_type_ids": model.type_vocab_size}.get(lname)
    if not limit or arr.size == 0 or arr.dtype.kind not in "iu":
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= limit:
        raise BadRequest(
            f"input '{name}' holds {lo if lo < 0 else hi}, outside the model's range 0..{limit}"
        )


def encode_infer(model_name, rid, outputs, binary_all):
    """The answer: (body, header length or None). `outputs` is [(name, array, binary)]."""
    import numpy as np

    outs, blobs = [], []
    for name, arr, binary in outputs:
        kind = next(k for k, d in KSERVE_DTYPES.items() if np.dtype(d) == arr.dtype)
        o = {"name": name, "datatype": kind, "shape": list(arr.shape)}
        if binary or binary_all:
            b = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            o["parameters"] = {"binary_data_size": len(b)}
            blobs.append(b)
        else:
            o["data"] = arr.ravel().tolist()
        outs.append(o)
    head = {"model_name": model_name, "model_version": "1", "outputs": outs}
    if rid is not None:
        head["id"] = rid
    body = json.dumps(head, separators=(",", ":")).encode()
    if not blobs and not binary_all:
        return body, None
    return body + b"".join(blobs), len(body)


# ---------------------------------------------------------------------------------------------
# Sentence embeddings, as the checkpoint's sentence-transformers configuration says.


class Embedder:
    def __init__(self, folder, max_positions):
        from tokenizers import Tokenizer

        tok_path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(tok_path):
            raise ValueError(
                f"{tok_path} is missing: /v1/embeddings needs the checkpoint's tokenizer.json "
                "next to the model"
            )
        try:
            self.tokenizer = Tokenizer.from_file(tok_path)
        except Exception as e:  # tokenizers raises its own exception type
            raise ValueError(f"could not read {tok_path}: {e}")
        st = read_json(os.path.join(folder, "sentence_bert_config.json")) or {}
        max_tokens = positive_int(st.get("max_seq_length")) or max_positions or 512
        if max_positions:
            max_tokens = min(max_tokens, max_positions)
        self.max_tokens = max_tokens
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        pooling_dir, self.normalize = None, False
        modules = read_json(os.path.join(folder, "modules.json"))
        if isinstance(modules, list):
            for m in modules:
                ty = str(m.get("type", "")) if isinstance(m, dict) else ""
                if ty.endswith("Pooling") and isinstance(m.get("path"), str):
                    pooling_dir = os.path.join(folder, m["path"])
                if ty.endswith("Normalize"):
                    self.normalize = True
        self.pooling = "mean"
        cfg = read_json(os.path.join(pooling_dir, "config.json")) if pooling_dir else None
        if isinstance(cfg, dict):
            if cfg.get("pooling_mode_mean_tokens"):
                self.pooling = "mean"
            elif cfg.get("pooling_mode_cls_token"):
                self.pooling = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                self.pooling = "max"
            else:
                raise ValueError(
                    "1_Pooling/config.json asks for a pooling mode this server does not have "
                    "(mean, cls, max)"
                )

    def tokenize(self, texts):
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def pool(self, hidden, lengths):
        """[rows, tokens, hidden] pooled over each row's real tokens; [rows, hidden] passes."""
        import numpy as np

        h = np.asarray(hidden)
        if h.ndim == 2 and h.shape[0] == len(lengths):
            out = h.astype(np.float64)
        elif h.ndim == 3 and h.shape[0] == len(lengths):
            lens = np.clip(np.asarray(lengths), 1, h.shape[1])
            mask = np.arange(h.shape[1])[None, :] < lens[:, None]
            if self.pooling == "cls":
                out = h[:, 0, :].astype(np.float64)
            elif self.pooling == "max":
                out = np.where(mask[:, :, None], h, -np.inf).max(axis=1).astype(np.float64)
            else:
                out = (h * mask[:, :, None]).sum(axis=1, dtype=np.float64) / lens[:, None]
        else:
            raise BadRequest(
                f"the model's output has shape {list(h.shape)}; embeddings need "
                "[rows, tokens, hidden] or [rows, hidden]",
                status=500,
            )
        if self.normalize:
            norm = np.linalg.norm(out, axis=1, keepdims=True)
            out = np.where(norm > 1e-12, out / np.maximum(norm, 1e-300), out)
        return out.astype(np.float32)


def bert_batch(seqs, input_names):
    """The BERT inputs for token sequences of different lengths, padded with 0 (mask 0)."""
    import numpy as np

    rows, length = len(seqs), max(len(s) for s in seqs)
    ids = np.zeros((rows, length), dtype=np.int64)
    mask = np.zeros((rows, length), dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        mask[r, : len(s)] = 1
    feeds = {}
    for name in input_names:
        low = name.lower()
        feeds[name] = mask if "mask" in low else np.zeros_like(ids) if "type" in low else ids
    return feeds


# ---------------------------------------------------------------------------------------------
# Metrics.


class Metrics:
    def __init__(self, model_name):
        self.lock = threading.Lock()
        self.labels = '{model="%s",version="1"}' % model_name.replace("\\", "\\\\").replace('"', '\\"')
        self.counters = dict.fromkeys(
            [
                "nv_inference_request_success",
                "nv_inference_request_failure",
                "nv_inference_count",
                "nv_inference_exec_count",
                "nv_inference_request_duration_us",
                "nv_inference_queue_duration_us",
                "nv_inference_compute_infer_duration_us",
            ],
            0,
        )
        self.responses = {}

    HELP = {
        "nv_inference_request_success": "Inference requests (infer, embeddings) answered 200",
        "nv_inference_request_failure": "Inference requests (infer, embeddings) answered otherwise",
        "nv_inference_count": "Rows inferred",
        "nv_inference_exec_count": "Model executions (session.run calls)",
        "nv_inference_request_duration_us": "Summed request time, handler start to encoded answer, microseconds",
        "nv_inference_queue_duration_us": "Summed time requests waited for a thread-pool thread, microseconds",
        "nv_inference_compute_infer_duration_us": "Summed session.run time, microseconds",
    }

    def ran(self, rows, compute_s):
        with self.lock:
            self.counters["nv_inference_count"] += rows
            self.counters["nv_inference_exec_count"] += 1
            self.counters["nv_inference_compute_infer_duration_us"] += int(compute_s * 1e6)

    def answered(self, endpoint, code, started, queued_s):
        with self.lock:
            key = "nv_inference_request_success" if code == 200 else "nv_inference_request_failure"
            self.counters[key] += 1
            self.counters["nv_inference_request_duration_us"] += int((time.perf_counter() - started) * 1e6)
            self.counters["nv_inference_queue_duration_us"] += int(queued_s * 1e6)
            self.responses[(endpoint, code)] = self.responses.get((endpoint, code), 0) + 1

    def render(self):
        with self.lock:
            lines = []
            for name, v in self.counters.items():
                lines += [f"# HELP {name} {self.HELP[name]}", f"# TYPE {name} counter", f"{name}{self.labels} {v}"]
            lines += [
                "# HELP fastapi_serve_responses_total Answers by endpoint and HTTP status",
                "# TYPE fastapi_serve_responses_total counter",
            ]
            for (endpoint, code), v in sorted(self.responses.items()):
                lines.append(f'fastapi_serve_responses_total{{endpoint="{endpoint}",code="{code}"}} {v}')
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The application.


def create_app(settings=None):
    """The FastAPI application for one process; `settings` (model, name, threads) default to
    those the starting process left in the environment (how --workers processes get them)."""
    import numpy as np
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if settings is None:
        try:
            settings = json.loads(os.environ[CONFIG_ENV])
            model = Model(settings["model"], settings["name"], settings["threads"])
        except BaseException as e:  # a worker that cannot load must stop the supervisor
            print(f"fastapi_serve.py: worker {os.getpid()} cannot start: {e}", file=sys.stderr)
            sys.exit(STARTUP_FAILURE)
        ready_dir = settings.get("ready_dir")
        if ready_dir:
            open(os.path.join(ready_dir, str(os.getpid())), "w").close()
    else:
        model = Model(settings["model"], settings["name"], settings["threads"])
    metrics = Metrics(model.name)
    output_names = [o.name for o in model.outputs]
    input_names = [i.name for i in model.inputs]

    app = FastAPI(title="fastapi_serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.model = model

    def kserve_error(message, status=400):
        return JSONResponse({"error": message}, status_code=status)

    def openai_error(message, status=400):
        kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "ServerError")
        return JSONResponse(
            {"object": "error", "message": message, "type": kind, "code": status}, status_code=status
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        if exc.status_code == 404:
            msg = "no such endpoint; see /v2 (KServe v2), /v1/embeddings, /v1/models, /metrics"
        elif exc.status_code == 405:
            msg = f"{request.method} is not allowed here; KServe v2 reads with GET and infers with POST"
        else:
            msg = str(exc.detail)
        return kserve_error(msg, exc.status_code)

    def check_model(name, version=None):
        if name != model.name:
            raise BadRequest(f"unknown model '{name}'; this server has '{model.name}'", 404)
        if version not in (None, "", "1"):
            raise BadRequest(f"model '{name}' has no version '{version}' (only 1)", 404)

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    async def health():
        return Response(status_code=200)

    @app.get("/v2")
    async def server_metadata():
        return {"name": "fastapi_serve", "version": "1", "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str = None):
        try:
            check_model(name, version)
        except BadRequest as e:
            return kserve_error(e.message, e.status)
        return model.metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = None):
        try:
            check_model(name, version)
        except BadRequest as e:
            return kserve_error(e.message, e.status)
        return Response(status_code=200)

    def run(feeds, names, rows):
        t0 = time.perf_counter()
        results = model.session.run(names, feeds)
        metrics.ran(rows, time.perf_counter() - t0)
        return results

    def infer_sync(body, header_len, arrived):
        queued = time.perf_counter() - arrived
        rid, raw, wanted, binary_all = decode_infer(body, header_len)
        feeds, rows = validate(model, raw)
        if wanted is None:
            wanted = [(n, False) for n in output_names]
        for name, _ in wanted:
            if name not in output_names:
                raise BadRequest(f"unknown output '{name}'; the model gives {', '.join(output_names)}")
        names = list(dict.fromkeys(n for n, _ in wanted))
        results = dict(zip(names, run(feeds, names, rows)))
        return encode_infer(model.name, rid, [(n, results[n], b) for n, b in wanted], binary_all), queued

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = None):
        started = time.perf_counter()
        queued = 0.0
        try:
            check_model(name, version)
            hl = request.headers.get("inference-header-content-length")
            header_len = None
            if hl is not None:
                try:
                    header_len = int(hl.strip())
                    if header_len < 0:
                        raise ValueError
                except ValueError:
                    raise BadRequest("Inference-Header-Content-Length must be a byte count")
            body = await request.body()
            (out, n), queued = await run_in_threadpool(infer_sync, body, header_len, time.perf_counter())
            if n is None:
                resp = Response(out, media_type="application/json")
            else:
                resp = Response(
                    out,
                    media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(n)},
                )
            code = 200
        except BadRequest as e:
            resp, code = kserve_error(e.message, e.status), e.status
        except Exception as e:  # ONNX Runtime's own failures
            resp, code = kserve_error(f"inference failed: {e}", 500), 500
        metrics.answered("infer", code, started, queued)
        return resp

    @app.get("/v1/models")
    async def openai_models():
        return {
            "object": "list",
            "data": [
                {
                    "id": model.name,
                    "object": "model",
                    "owned_by": "fastapi_serve",
                    "root": model.name,
                    "max_model_len": model.embedder.max_tokens if model.embedder else None,
                }
            ],
        }

    def token_list(items):
        for t in items:
            if not is_int(t):
                raise BadRequest(f"token id {json.dumps(t)} is not an integer")
        return list(items)

    def embeddings_sync(body, arrived):
        queued = time.perf_counter() - arrived
        try:
            req = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the request is not JSON: {e}")
        if not isinstance(req, dict):
            raise BadRequest("the request must be a JSON object")
        name = req.get("model")
        if not isinstance(name, str):
            raise BadRequest("'model' (a string) is required")
        if name != model.name:
            raise BadRequest(f"The model `{name}` does not exist; this server has `{model.name}`", 404)
        if model.embedder is None:
            raise BadRequest(model.embedder_error)
        fmt = req.get("encoding_format")
        if fmt not in (None, "float", "base64"):
            raise BadRequest(f"encoding_format '{fmt}' is not one of float, base64")
        if "input" not in req:
            raise BadRequest("'input' is required: a string, a list of strings, or token ids")
        inp = req["input"]
        if isinstance(inp, str):
            seqs = model.embedder.tokenize([inp])
        elif isinstance(inp, list) and not inp:
            raise BadRequest("'input' is an empty list")
        elif isinstance(inp, list) and all(isinstance(x, str) for x in inp):
            if len(inp) > MAX_EMBED_INPUTS:
                raise BadRequest(f"{len(inp)} inputs in one request; at most {MAX_EMBED_INPUTS}")
            seqs = model.embedder.tokenize(inp)
        elif isinstance(inp, list) and all(is_int(x) for x in inp):
            seqs = [token_list(inp)]
        elif isinstance(inp, list) and all(isinstance(x, list) for x in inp):
            seqs = [token_list(x) for x in inp]
        else:
            raise BadRequest(
                "'input' must be a string, a list of strings, a list of token ids, or a list of such lists"
            )
        if len(seqs) > MAX_EMBED_INPUTS:
            raise BadRequest(f"{len(seqs)} inputs in one request; at most {MAX_EMBED_INPUTS}")
        for i, q in enumerate(seqs):
            if not q:
                raise BadRequest(f"input {i} has no tokens")
            if len(q) > model.embedder.max_tokens:
                raise BadRequest(
                    f"input {i} is {len(q)} tokens; this model takes at most {model.embedder.max_tokens}"
                )
            if model.vocab_size:
                bad = [t for t in q if t < 0 or t >= model.vocab_size]
                if bad:
                    raise BadRequest(
                        f"input {i} holds token id {bad[0]}, outside the vocabulary 0..{model.vocab_size}"
                    )
        lengths = [len(q) for q in seqs]
        feeds = bert_batch(seqs, input_names)
        out_name = next(
            (o.name for o in model.outputs if o.name == "last_hidden_state"),
            next((o.name for o in model.outputs if len(o.dims) == 3), output_names[0]),
        )
        (hidden,) = run(feeds, [out_name], len(seqs))
        vecs = model.embedder.pool(hidden, lengths)
        dims = req.get("dimensions")
        if dims is not None and dims != vecs.shape[1]:
            raise BadRequest(
                f"dimensions {json.dumps(dims)} is not supported; this model's embeddings have {vecs.shape[1]}"
            )
        if fmt == "base64":
            embs = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vecs]
        else:
            embs = vecs.tolist()
        tokens = sum(lengths)
        answer = {
            "id": f"embd-{os.getpid()}-{time.monotonic_ns()}",
            "object": "list",
            "created": int(time.time()),
            "model": model.name,
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embs)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return json.dumps(answer, separators=(",", ":")).encode(), queued

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        started = time.perf_counter()
        queued = 0.0
        try:
            body = await request.body()
            out, queued = await run_in_threadpool(embeddings_sync, body, time.perf_counter())
            resp, code = Response(out, media_type="application/json"), 200
        except BadRequest as e:
            resp, code = openai_error(e.message, e.status), e.status
        except Exception as e:
            resp, code = openai_error(f"inference failed: {e}", 500), 500
        metrics.answered("embeddings", code, started, queued)
        return resp

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    # Keep numpy's import out of the first request.
    np.zeros(1)
    return app


# ---------------------------------------------------------------------------------------------
# Process management: the port, the workers, the ready line, signals.


def bind_port(port):
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as e:
        sock.close()
        raise SystemExit(f"fastapi_serve.py: port {port} on {HOST} is in use ({e.strerror})")
    sock.set_inheritable(True)
    return sock


def model_answers(port, name):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/v2/models/{name}/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv=None):
    a = parse_args(argv)
    ensure_fastapi_environment()
    started = time.monotonic()
    deadline = started + a.shutdown_after if a.shutdown_after is not None else None

    # stdout carries only the ready line: file descriptor 1 becomes stderr for this process and
    # the workers it starts, the ready line goes to a copy of the original.
    sys.stdout.flush()
    ready_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import uvicorn

    sock = bind_port(a.http_port)
    port = sock.getsockname()[1]
    stop = threading.Event()
    settings = {"model": a.model, "name": a.name, "threads": a.threads}
    config_args = dict(
        host=HOST,
        port=port,
        log_level=a.log_level,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        loop="uvloop",
        http="httptools",
        lifespan="off",
    )

    if a.workers == 1:
        # The signal uvicorn re-raises after its graceful shutdown lands here, not in the
        # default handler (which would end the process by the signal, not with 0).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            app = create_app(settings)
        except Exception as e:
            print(f"fastapi_serve.py: cannot load {a.model}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(
            f"fastapi_serve.py: model {a.name}, ONNX Runtime {a.threads} intra-op threads, port {port}",
            file=sys.stderr,
        )
        if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
            return 0
        server = uvicorn.Server(uvicorn.Config(app, **config_args))

        def request_exit():
            server.should_exit = True

        is_ready = lambda: server.started  # noqa: E731
        alive = lambda: True  # noqa: E731
        serve = lambda: server.run(sockets=[sock])  # noqa: E731
    else:
        import tempfile

        from uvicorn.supervisors import Multiprocess

        ready_dir = tempfile.mkdtemp(prefix="fastapi-serve-")
        os.environ[CONFIG_ENV] = json.dumps(dict(settings, ready_dir=ready_dir))
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        config = uvicorn.Config(
            "fastapi_serve:create_app", factory=True, workers=a.workers, **config_args
        )
        supervisor = Multiprocess(config, sockets=[sock])  # handles SIGTERM and SIGINT itself
        print(
            f"fastapi_serve.py: model {a.name}, {a.workers} workers with {a.threads} ONNX Runtime "
            f"intra-op threads each, port {port}",
            file=sys.stderr,
        )

        def request_exit():
            supervisor.should_exit.set()

        def is_ready():
            return len(os.listdir(ready_dir)) >= a.workers and model_answers(port, a.name)

        alive = lambda: not supervisor.should_exit.is_set()  # noqa: E731
        serve = supervisor.run

    failed = threading.Event()

    def watch():
        limit = time.monotonic() + READY_TIMEOUT_S
        while not is_ready():
            if stop.is_set() or not alive():
                return
            if deadline is not None and time.monotonic() >= deadline:
                return request_exit()
            if time.monotonic() >= limit:
                print(f"fastapi_serve.py: model {a.name} did not become ready", file=sys.stderr)
                failed.set()
                return request_exit()
            time.sleep(0.02)
        print(f"ready http={port} model={a.name}", file=ready_out, flush=True)
        while deadline is not None:
            if time.monotonic() >= deadline:
                return request_exit()
            time.sleep(0.1)

    threading.Thread(target=watch, name="ready-watch", daemon=True).start()
    try:
        serve()
    finally:
        sock.close()
        if a.workers > 1:
            import shutil

            shutil.rmtree(ready_dir, ignore_errors=True)
    if failed.is_set():
        return 1
    if a.workers > 1 and any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        print("fastapi_serve.py: a worker could not start", file=sys.stderr)
        return 1
    if a.workers == 1 and not server.started:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
