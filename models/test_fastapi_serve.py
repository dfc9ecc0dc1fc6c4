"""The FastAPI baseline (models/fastapi_serve.py) answers as ONNX Runtime does, over KServe v2
(JSON and binary tensors) and /v1/embeddings, refuses bad requests with a 400 that names the
problem, and exits 0 on SIGTERM. The server runs under .venv-fastapi (scripts/setup.sh fastapi);
without it these tests are skipped."""

import json
import os
import select
import signal
import struct
import subprocess
import time
import unittest
import urllib.error
import urllib.request

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURE = os.path.join(HERE, "fixtures", "tiny-bert")
SCRIPT = os.path.join(HERE, "fastapi_serve.py")
SERVER_PYTHON = os.path.join(ROOT, ".venv-fastapi", "bin", "python")
HAVE_VENV = os.access(SERVER_PYTHON, os.X_OK)
SKIP_WHY = f"{SERVER_PYTHON} is missing: run scripts/setup.sh fastapi to test the FastAPI baseline"


def start_server(*extra):
    """The server on a port of the system's choosing; (process, port) once it is ready."""
    proc = subprocess.Popen(
        [SERVER_PYTHON, SCRIPT, "--model", FIXTURE, "--http-port", "0", "--threads", "1",
         "--log-level", "warning", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            line = proc.stdout.readline()
            if line.startswith("ready "):
                fields = dict(f.split("=", 1) for f in line.split()[1:])
                assert fields["model"] == "tiny-bert", line
                return proc, int(fields["http"])
            if not line:
                break
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"fastapi_serve.py did not become ready (rc {proc.returncode}): {err[-2000:]}")


def call(port, path, body=None, headers=None):
    """(status, headers, body bytes)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers or {},
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def bert_inputs(rows=2, seq=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 128, (rows, seq), dtype=np.int64)
    mask = np.ones((rows, seq), dtype=np.int64)
    mask[-1, seq - 2:] = 0
    types = np.zeros((rows, seq), dtype=np.int64)
    types[0, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def json_request(feeds, **extra):
    req = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": "INT64", "data": a.tolist()}
                      for n, a in feeds.items()]}
    req.update(extra)
    return json.dumps(req).encode()


def binary_request(feeds):
    head = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": "INT64",
                        "parameters": {"binary_data_size": a.nbytes}} for n, a in feeds.items()],
            "parameters": {"binary_data_output": True}}
    h = json.dumps(head).encode()
    body = h + b"".join(a.astype("<i8").tobytes() for a in feeds.values())
    return body, {"Inference-Header-Content-Length": str(len(h)),
                  "Content-Type": "application/octet-stream"}


@unittest.skipUnless(HAVE_VENV, SKIP_WHY)
class FastapiServeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_server()
        cls.session = ort.InferenceSession(os.path.join(FIXTURE, "model.onnx"),
                                           providers=["CPUExecutionProvider"])

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        try:
            cls.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
            cls.proc.communicate()

    def reference(self, feeds):
        return self.session.run(["last_hidden_state"], feeds)[0]

    def test_metadata_declares_tensors_and_token_ranges(self):
        status, _, body = call(self.port, "/v2/models/tiny-bert")
        self.assertEqual(status, 200)
        m = json.loads(body)
        self.assertEqual(m["name"], "tiny-bert")
        self.assertEqual([(i["name"], i["datatype"], i["shape"]) for i in m["inputs"]],
                         [(n, "INT64", [-1, -1]) for n in ("input_ids", "attention_mask", "token_type_ids")])
        self.assertEqual(m["outputs"], [{"name": "last_hidden_state", "datatype": "FP32", "shape": [-1, -1, 32]}])
        self.assertEqual(
            m["parameters"],
            {"vocab_size": 128, "type_vocab_size": 2, "max_position_embeddings": 64},
        )
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/tiny-bert/ready",
                     "/v2/models/tiny-bert/versions/1/ready"):
            self.assertEqual(call(self.port, path)[0], 200, path)
        status, _, body = call(self.port, "/v2/models/other")
        self.assertEqual(status, 404)
        self.assertIn("unknown model 'other'", json.loads(body)["error"])

    def test_json_infer_equals_onnxruntime(self):
        feeds = bert_inputs()
        status, headers, body = call(self.port, "/v2/models/tiny-bert/infer", json_request(feeds, id="7"),
                                     {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body[:300])
        self.assertIsNone(headers.get("Inference-Header-Content-Length"))
        r = json.loads(body)
        self.assertEqual(r["id"], "7")
        (out,) = r["outputs"]
        self.assertEqual((out["name"], out["datatype"], out["shape"]), ("last_hidden_state", "FP32", [2, 7, 32]))
        got = np.array(out["data"], dtype=np.float32).reshape(out["shape"])
        self.assertLess(np.abs(got - self.reference(feeds)).max(), 1e-5)

    def test_binary_infer_equals_onnxruntime_both_ways(self):
        feeds = bert_inputs(rows=3, seq=5, seed=1)
        body, headers = binary_request(feeds)
        status, rh, answer = call(self.port, "/v2/models/tiny-bert/infer", body, headers)
        self.assertEqual(status, 200, answer[:300])
        n = int(rh["Inference-Header-Content-Length"])
        head = json.loads(answer[:n])
        (out,) = head["outputs"]
        self.assertEqual(out["shape"], [3, 5, 32])
        self.assertEqual(out["parameters"]["binary_data_size"], 3 * 5 * 32 * 4)
        self.assertEqual(len(answer) - n, out["parameters"]["binary_data_size"])
        got = np.frombuffer(answer[n:], dtype="<f4").reshape(out["shape"])
        self.assertLess(np.abs(got - self.reference(feeds)).max(), 1e-5)
        # A JSON request may ask for one output in binary.
        req = json_request(feeds, outputs=[{"name": "last_hidden_state", "parameters": {"binary_data": True}}])
        status, rh, answer = call(self.port, "/v2/models/tiny-bert/infer", req)
        self.assertEqual(status, 200)
        n = int(rh["Inference-Header-Content-Length"])
        got = np.frombuffer(answer[n:], dtype="<f4").reshape(3, 5, 32)
        self.assertLess(np.abs(got - self.reference(feeds)).max(), 1e-5)

    def test_embeddings_are_mean_pooled_and_normalised(self):
        from tokenizers import Tokenizer

        texts = ["hello world", "the quick brown fox jumps over the lazy dog"]
        status, _, body = call(self.port, "/v1/embeddings",
                               json.dumps({"model": "tiny-bert", "input": texts}).encode(),
                               {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body[:300])
        r = json.loads(body)
        self.assertEqual(r["object"], "list")
        self.assertEqual(r["model"], "tiny-bert")
        self.assertEqual([d["index"] for d in r["data"]], [0, 1])
        got = np.array([d["embedding"] for d in r["data"]], dtype=np.float64)
        self.assertEqual(got.shape, (2, 32))
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

        tok = Tokenizer.from_file(os.path.join(FIXTURE, "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=64)
        seqs = [e.ids for e in tok.encode_batch(texts)]
        self.assertEqual(r["usage"], {"prompt_tokens": sum(map(len, seqs)), "total_tokens": sum(map(len, seqs))})
        want = []
        for ids in seqs:  # one at a time: no padding at all in the reference
            a = np.array([ids], dtype=np.int64)
            h = self.reference({"input_ids": a, "attention_mask": np.ones_like(a),
                                "token_type_ids": np.zeros_like(a)})[0].astype(np.float64)
            v = h.mean(axis=0)
            want.append(v / np.linalg.norm(v))
        self.assertLess(np.abs(got - np.array(want)).max(), 1e-5)

        # The fixture's reference sentences (one of them past max_seq_length, so truncated).
        ref = json.load(open(os.path.join(FIXTURE, "embeddings_reference.json")))
        status, _, body = call(self.port, "/v1/embeddings",
                               json.dumps({"model": "tiny-bert", "input": ref["sentences"]}).encode())
        self.assertEqual(status, 200)
        r = json.loads(body)
        self.assertEqual(r["usage"]["prompt_tokens"], sum(len(t) for t in ref["token_ids"]))
        got = np.array([d["embedding"] for d in r["data"]])
        self.assertLess(np.abs(got - np.array(ref["embeddings"])).max(), 1e-5)

        # One string, and base64.
        status, _, body = call(self.port, "/v1/embeddings",
                               json.dumps({"model": "tiny-bert", "input": texts[0],
                                           "encoding_format": "base64"}).encode())
        self.assertEqual(status, 200)
        import base64

        one = np.frombuffer(base64.b64decode(json.loads(body)["data"][0]["embedding"]), dtype="<f4")
        self.assertLess(np.abs(one - want[0]).max(), 1e-5)

    def test_bad_requests_are_400s_that_name_the_problem(self):
        feeds = bert_inputs(rows=1, seq=4)
        good = json.loads(json_request(feeds))

        def with_input(k, **change):
            r = json.loads(json.dumps(good))
            r["inputs"][k].update(change)
            return json.dumps(r).encode()

        bin_body, bin_headers = binary_request(feeds)
        cases = [
            ("bad JSON", b'{"inputs": [', {}, "not a KServe v2 infer request"),
            ("unknown input", with_input(0, name="input_idz"), {}, "unknown input 'input_idz'"),
            ("missing input", json.dumps({"inputs": good["inputs"][:2]}).encode(), {},
             "input 'token_type_ids' is missing"),
            ("wrong dtype", with_input(1, datatype="FP32", data=[[1.0, 1.0, 1.0, 1.0]]), {},
             "input 'attention_mask' is FP32, the model takes INT64"),
            ("unknown dtype", with_input(1, datatype="STRING"), {}, "unknown datatype 'STRING'"),
            ("values of the wrong kind", with_input(0, data=[[1, 2, "a", 4]]), {}, "not integers"),
            ("too few values", with_input(0, data=[1, 2, 3]), {}, "holds 3 values, the shape needs 4"),
            ("id past the vocabulary", with_input(0, data=[1, 2, 3, 500]), {},
             "outside the model's range 0..128"),
            ("too long", with_input(0, shape=[1, 65], data=[1] * 65), {}, "at most 64"),
            ("wrong byte count", bin_body[:-8], bin_headers, "runs past the end of the body"),
            ("bytes left over", bin_body + b"\0" * 8, bin_headers, "belong to no input"),
            ("header length past the body", bin_body,
             dict(bin_headers, **{"Inference-Header-Content-Length": str(len(bin_body) + 1)}),
             "Inference-Header-Content-Length is"),
            ("unknown output", json.dumps(dict(good, outputs=[{"name": "pooled"}])).encode(), {},
             "unknown output 'pooled'"),
        ]
        # A binary input whose declared size does not fit its shape.
        head = json.loads(bin_body[: int(bin_headers["Inference-Header-Content-Length"])])
        head["inputs"][0]["parameters"]["binary_data_size"] = 24
        h = json.dumps(head).encode()
        rest = bin_body[int(bin_headers["Inference-Header-Content-Length"]):]
        cases.append(("byte count unlike the shape", h + rest[:24] + rest[32:],
                      {"Inference-Header-Content-Length": str(len(h))},
                      "input 'input_ids': 24 bytes given, the shape needs 32"))
        for what, body, headers, want in cases:
            with self.subTest(what):
                status, _, answer = call(self.port, "/v2/models/tiny-bert/infer", body, headers)
                self.assertEqual(status, 400, answer[:300])
                self.assertIn(want, json.loads(answer)["error"])
        for what, req, want in [
            ("bad JSON", b"{", "not JSON"),
            ("no input", b'{"model": "tiny-bert"}', "'input' is required"),
            ("empty list", b'{"model": "tiny-bert", "input": []}', "empty list"),
        ]:
            with self.subTest("embeddings: " + what):
                status, _, answer = call(self.port, "/v1/embeddings", req)
                self.assertEqual(status, 400, answer[:300])
                self.assertIn(want, json.loads(answer)["message"])
        status, _, answer = call(self.port, "/v1/embeddings", b'{"model": "x", "input": "a"}')
        self.assertEqual(status, 404)

    def test_metrics_count_requests_and_inference_time(self):
        def scrape():
            status, _, body = call(self.port, "/metrics")
            self.assertEqual(status, 200)
            return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                    for line in body.decode().splitlines() if line and not line.startswith("#")}

        label = '{model="tiny-bert",version="1"}'
        before = scrape()
        body, headers = binary_request(bert_inputs(rows=2, seq=4))
        self.assertEqual(call(self.port, "/v2/models/tiny-bert/infer", body, headers)[0], 200)
        after = scrape()
        self.assertEqual(after["nv_inference_request_success" + label]
                         - before["nv_inference_request_success" + label], 1)
        self.assertEqual(after["nv_inference_count" + label] - before["nv_inference_count" + label], 2)
        self.assertGreater(after["nv_inference_compute_infer_duration_us" + label],
                           before["nv_inference_compute_infer_duration_us" + label])
        self.assertGreaterEqual(after['fastapi_serve_responses_total{endpoint="infer",code="200"}'], 1)


@unittest.skipUnless(HAVE_VENV, SKIP_WHY)
class FastapiServeLifecycleTest(unittest.TestCase):
    def test_sigterm_exits_0_with_only_the_ready_line_on_stdout(self):
        proc, port = start_server()
        self.assertEqual(call(port, "/v2/health/ready")[0], 200)
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        self.assertEqual(proc.returncode, 0, err[-2000:])
        self.assertEqual(out, "")  # the ready line was read by start_server


if __name__ == "__main__":
    unittest.main()
