"""Tests of the exporter: the committed fixtures (tiny-bert, tiny-cnn, tiny-vit) are
reproducible, the exported graphs have working dynamic axes and match PyTorch, tiny-bert's
tokenizer and sentence-transformers files reproduce its embeddings reference, RoBERTa,
DistilBERT, ViT and torchvision exports work, and bad input is a clear error.

Floating-point tolerances hold across CPUs: PyTorch and ONNX Runtime pick other kernels on
other processors (AVX-512, AMX, AVX2) and reorder float32 sums. Values PyTorch computed on the
machine that wrote a fixture are compared with 10 float32 ulps at each value's magnitude plus
1e-5 absolute; ONNX Runtime against PyTorch with the harness's parity tolerance, 1e-4 times
the output's largest magnitude when that is over 1. Only what integer arithmetic makes (token
ids, reference pixels, the files' bytes) is compared exactly."""

import collections
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export  # noqa: E402

FIXTURE = os.path.join(HERE, "fixtures", "tiny-bert")
FIXTURES = os.path.join(HERE, "fixtures")
# Values PyTorch computed on another CPU: 10 ulps of float32 plus 1e-5 absolute.
ULPS10 = 10 * np.finfo(np.float32).eps


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def run_export(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = export.main(argv)
    return code, err.getvalue()


def run_export_process(argv):
    """export.py in its own process: (exit status, stderr)."""
    p = subprocess.run(
        [sys.executable, os.path.join(HERE, "export.py"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return p.returncode, p.stderr


def assert_parity(test, got, want, what=""):
    """ONNX Runtime against PyTorch: max abs diff within 1e-4, times the largest output
    magnitude when that is over 1."""
    test.assertEqual(got.shape, want.shape, what)
    bound = 1e-4 * max(1.0, float(np.max(np.abs(want))))
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    test.assertLessEqual(diff, bound, f"{what}: max abs diff {diff:.3g} > {bound:.3g}")


def cosine(a, b):
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_array(entry):
    """A reference tensor of manifest.json as a numpy array of its dtype."""
    return np.array(entry["data"], dtype=entry["dtype"]).reshape(entry["shape"])


def op_types(path):
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def session(path):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


class FixtureTest(unittest.TestCase):
    def test_the_committed_fixture_is_what_the_exporter_makes(self):
        with tempfile.TemporaryDirectory() as out:
            code, err = run_export(["--tiny-fixture", out])
            self.assertEqual(code, 0, err)
            with open(os.path.join(out, "manifest.json")) as f:
                new = json.load(f)
            self.assertEqual(
                read_bytes(os.path.join(out, "tokenizer.json")),
                read_bytes(os.path.join(FIXTURE, "tokenizer.json")),
            )
            self.assertTrue(os.path.isfile(os.path.join(out, "embeddings_reference.json")))
        with open(os.path.join(FIXTURE, "manifest.json")) as f:
            committed = json.load(f)
        self.assertEqual(new["inputs"], committed["inputs"])
        self.assertEqual(new["reference"]["inputs"], committed["reference"]["inputs"])
        self.assertEqual(new["sha256"]["model.safetensors"], committed["sha256"]["model.safetensors"])
        a = np.array(new["reference"]["outputs"]["last_hidden_state"]["data"])
        b = np.array(committed["reference"]["outputs"]["last_hidden_state"]["data"])
        # The export is deterministic, its float32 sums are not across CPUs: oneDNN and MLAS
        # pick other kernels (AVX-512, AMX) on other processors and reorder the additions, a
        # few ulps per layer (1.3e-6 on an Intel Xeon against the AMD EPYC that wrote the
        # fixture). Allow 10 ulps of float32 at each value's magnitude plus 1e-5 absolute:
        # ten times below the harness's parity tolerance (1e-4), far above reordering.
        np.testing.assert_allclose(a, b, rtol=10 * np.finfo(np.float32).eps, atol=1e-5)

    def test_the_committed_text_files_are_what_the_exporter_writes(self):
        with tempfile.TemporaryDirectory() as out:
            shutil.copyfile(os.path.join(FIXTURE, "model.onnx"), os.path.join(out, "model.onnx"))
            code, err = run_export(["--tiny-fixture", out, "--text-files-only"])
            self.assertEqual(code, 0, err)
            written = {
                os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs
            }
            self.assertEqual(written, {"model.onnx", *export.TEXT_FILES})
            for rel in export.TEXT_FILES:
                if rel != "embeddings_reference.json":
                    new_bytes = read_bytes(os.path.join(out, rel))
                    self.assertEqual(new_bytes, read_bytes(os.path.join(FIXTURE, rel)), rel)
            # Floating-point results may differ in the last digits on another CPU.
            new = read_json(os.path.join(out, "embeddings_reference.json"))
        committed = read_json(os.path.join(FIXTURE, "embeddings_reference.json"))
        self.assertEqual(new["sentences"], committed["sentences"])
        self.assertEqual(new["token_ids"], committed["token_ids"])
        for key in ["embeddings", "batched_embeddings"]:
            np.testing.assert_allclose(
                new[key], committed[key], rtol=10 * np.finfo(np.float32).eps, atol=1e-5
            )

    def test_manifest_describes_the_graph(self):
        with open(os.path.join(FIXTURE, "manifest.json")) as f:
            m = json.load(f)
        self.assertEqual([i["name"] for i in m["inputs"]], export.INPUT_NAMES)
        self.assertEqual(m["inputs"][0]["dims"], ["batch", "sequence"])
        self.assertEqual(m["vocab_size"], 128)
        self.assertLess(m["export_check"]["max_abs_diff_vs_torch"], 1e-4)
        ids = m["reference"]["inputs"]["input_ids"]["data"]
        self.assertTrue(all(0 <= i < m["vocab_size"] for i in ids))
        # The second reference row is padded, so masking is part of every parity check.
        self.assertIn(0, m["reference"]["inputs"]["attention_mask"]["data"])
        # Each reference tensor says how to read its data.
        self.assertEqual(
            {n: t["dtype"] for n, t in m["reference"]["inputs"].items()},
            {n: "int64" for n in export.INPUT_NAMES},
        )
        self.assertEqual(m["reference"]["outputs"]["last_hidden_state"]["dtype"], "float32")
        self.assertEqual(m["max_sequence_length"], m["max_position_embeddings"])

    def test_variants_are_written_and_their_accuracy_recorded(self):
        with open(os.path.join(FIXTURE, "manifest.json")) as f:
            m = json.load(f)
        self.assertEqual(sorted(m["variants"]), ["fp16", "fp32", "int8"])
        for v, info in m["variants"].items():
            path = os.path.join(FIXTURE, info["file"])
            self.assertTrue(os.path.isfile(path), path)
            self.assertEqual(export.sha256(path), info["sha256"])
        self.assertLess(m["variants"]["fp32"]["max_abs_diff_vs_torch"], 1e-4)
        self.assertGreater(m["variants"]["fp16"]["cosine_vs_torch"], 0.999)
        self.assertGreater(m["variants"]["int8"]["cosine_vs_torch"], 0.95)
        # Lower precision does change the numbers.
        self.assertGreater(m["variants"]["int8"]["max_abs_diff_vs_torch"], 1e-3)


class DynamicAxesTest(unittest.TestCase):
    def test_onnx_matches_pytorch_at_shapes_other_than_the_export_example(self):
        import onnxruntime as ort
        import torch

        _, model = export.load_checkpoint(FIXTURE)
        encoder = export.encoder_module(model)
        sess = ort.InferenceSession(
            os.path.join(FIXTURE, "model.onnx"), providers=["CPUExecutionProvider"]
        )
        rng = np.random.default_rng(3)
        for batch, seq in [(1, 1), (3, 11), (2, 64)]:
            ids = rng.integers(0, 128, size=(batch, seq), dtype=np.int64)
            mask = np.ones((batch, seq), dtype=np.int64)
            types = np.zeros((batch, seq), dtype=np.int64)
            (got,) = sess.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
            with torch.no_grad():
                want = encoder(torch.tensor(ids), torch.tensor(mask), torch.tensor(types)).numpy()
            self.assertEqual(got.shape, (batch, seq, 32))
            self.assertLess(float(np.max(np.abs(got - want))), 1e-5, (batch, seq))


class TokenizerFixtureTest(unittest.TestCase):
    """The fixture's tokenizer and sentence-transformers files, and embeddings_reference.json
    recomputed with the `tokenizers` library and ONNX Runtime."""

    @classmethod
    def setUpClass(cls):
        from tokenizers import Tokenizer

        cls.ref = read_json(os.path.join(FIXTURE, "embeddings_reference.json"))
        cls.config = read_json(os.path.join(FIXTURE, "config.json"))
        cls.tokenizer = Tokenizer.from_file(os.path.join(FIXTURE, "tokenizer.json"))
        # As sentence-transformers does: truncation at max_seq_length, no padding.
        st = read_json(os.path.join(FIXTURE, "sentence_bert_config.json"))
        cls.tokenizer.enable_truncation(max_length=st["max_seq_length"])

    def test_vocabulary_is_the_models(self):
        vocab = self.tokenizer.get_vocab()
        self.assertEqual(self.tokenizer.get_vocab_size(), 128)
        self.assertEqual(len(vocab), self.config["vocab_size"])
        self.assertEqual(sorted(vocab.values()), list(range(128)))
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        self.assertEqual([vocab[t] for t in specials], [0, 1, 2, 3, 4])
        self.assertEqual(vocab["[PAD]"], self.config["pad_token_id"])
        with open(os.path.join(FIXTURE, "vocab.txt"), encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertEqual(lines, sorted(vocab, key=vocab.get))

    def test_reference_token_ids_are_reproduced(self):
        got = [self.tokenizer.encode(s).ids for s in self.ref["sentences"]]
        self.assertEqual(got, self.ref["token_ids"])
        lengths = [len(ids) for ids in got]
        self.assertEqual(max(lengths), self.ref["max_seq_length"])  # one sentence is truncated
        for ids in got:
            self.assertEqual((ids[0], ids[-1]), (2, 3))  # [CLS] ... [SEP]
        tokens = [t for s in self.ref["sentences"] for t in self.tokenizer.encode(s).tokens]
        self.assertIn("[UNK]", tokens)
        self.assertTrue(any(t.startswith("##") for t in tokens))
        # Lower-cased and accents stripped, like the BERT uncased tokenizers.
        self.assertEqual(
            self.tokenizer.encode("Café").tokens, ["[CLS]", "c", "##a", "##f", "##e", "[SEP]"]
        )

    def test_reference_embeddings_are_reproduced_by_onnxruntime(self):
        import onnxruntime as ort

        self.assertEqual((self.ref["pooling"], self.ref["normalize"]), ("mean", True))
        sess = ort.InferenceSession(
            os.path.join(FIXTURE, "model.onnx"), providers=["CPUExecutionProvider"]
        )

        def pooled(ids, mask):
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}
            (h,) = sess.run(None, feeds)
            m = mask[:, :, None].astype(np.float64)
            mean = (h * m).sum(axis=1) / m.sum(axis=1)
            return mean / np.linalg.norm(mean, axis=1, keepdims=True)

        single = np.concatenate([
            pooled(np.array([ids], np.int64), np.ones((1, len(ids)), np.int64))
            for ids in self.ref["token_ids"]
        ])
        np.testing.assert_allclose(single, self.ref["embeddings"], rtol=0, atol=1e-5)
        # One batch padded with [PAD] = 0, attention mask 0 on the padding.
        width = max(len(ids) for ids in self.ref["token_ids"])
        ids = np.array([r + [0] * (width - len(r)) for r in self.ref["token_ids"]], np.int64)
        mask = (ids != 0).astype(np.int64)
        batched = pooled(ids, mask)
        np.testing.assert_allclose(batched, self.ref["batched_embeddings"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(single, axis=1), 1.0, rtol=0, atol=1e-6)

    def test_sentence_transformers_files(self):
        modules = read_json(os.path.join(FIXTURE, "modules.json"))
        self.assertEqual(
            [(m["idx"], m["name"], m["path"], m["type"].rsplit(".", 1)[1]) for m in modules],
            [(0, "0", "", "Transformer"), (1, "1", "1_Pooling", "Pooling"),
             (2, "2", "2_Normalize", "Normalize")],
        )
        pooling = read_json(os.path.join(FIXTURE, "1_Pooling", "config.json"))
        self.assertEqual(pooling["word_embedding_dimension"], self.config["hidden_size"])
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_")}
        self.assertEqual([k for k, v in modes.items() if v], ["pooling_mode_mean_tokens"])
        st = read_json(os.path.join(FIXTURE, "sentence_bert_config.json"))
        self.assertEqual(st["max_seq_length"], self.config["max_position_embeddings"])
        tok_config = read_json(os.path.join(FIXTURE, "tokenizer_config.json"))
        self.assertEqual(tok_config["model_max_length"], st["max_seq_length"])
        self.assertTrue(tok_config["do_lower_case"])


class BadInputTest(unittest.TestCase):
    def test_missing_checkpoint_folder(self):
        with tempfile.TemporaryDirectory() as out:
            code, err = run_export(["--checkpoint", "/no/such/folder", "--out", out])
        self.assertEqual(code, 2)
        self.assertIn("checkpoint folder /no/such/folder does not exist", err)

    def test_folder_without_config(self):
        with tempfile.TemporaryDirectory() as d:
            code, err = run_export(["--checkpoint", d, "--out", os.path.join(d, "out")])
        self.assertEqual(code, 2)
        self.assertIn("config.json not found", err)

    def test_text_files_only_needs_an_exported_fixture(self):
        with tempfile.TemporaryDirectory() as d:
            code, err = run_export(["--tiny-fixture", d, "--text-files-only"])
            self.assertEqual(code, 2)
            self.assertIn("model.onnx not found: export the fixture first", err)
            self.assertEqual(os.listdir(d), [])
            code, err = run_export(["--checkpoint", d, "--out", d, "--text-files-only"])
        self.assertEqual(code, 2)
        self.assertIn("--text-files-only goes with --tiny-fixture", err)

    def test_unknown_variant(self):
        with tempfile.TemporaryDirectory() as d:
            code, err = run_export(["--tiny-fixture", d, "--variants", "fp32,fp8"])
        self.assertEqual(code, 2)
        self.assertIn("unknown variant(s) fp8", err)

    def test_unsupported_architecture(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"model_type": "gpt2"}, f)
            code, err = run_export(["--checkpoint", d, "--out", os.path.join(d, "out")])
        self.assertEqual(code, 2)
        self.assertIn("model_type 'gpt2'", err)
        self.assertIn("is a decoder", err)

    def test_config_with_a_model_type_transformers_does_not_know(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"model_type": "frobnicator", "hidden_size": 8}, f)
            out = os.path.join(d, "out")
            code, err = run_export_process(["--checkpoint", d, "--out", out])
            self.assertFalse(os.path.exists(out))
        self.assertEqual(code, 2, err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("model_type 'frobnicator'", err)
        self.assertIn("is not an architecture transformers", err)
        self.assertIn("fix model_type in config.json", err)

    def test_config_without_model_type(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"hidden_size": 8}, f)
            code, err = run_export(["--checkpoint", d, "--out", os.path.join(d, "out")])
        self.assertEqual(code, 2)
        self.assertIn("has no model_type", err)

    def test_config_that_is_not_json(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write("{model_type: bert")
            code, err = run_export(["--checkpoint", d, "--out", os.path.join(d, "out")])
        self.assertEqual(code, 2)
        self.assertIn("config.json is not readable JSON", err)

    def test_encoder_decoder(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"model_type": "t5"}, f)
            code, err = run_export(["--checkpoint", d, "--out", os.path.join(d, "out")])
        self.assertEqual(code, 2)
        self.assertIn("model_type 't5'", err)
        self.assertIn("is an encoder-decoder model", err)

    def test_unknown_torchvision_model(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "out")
            code, err = run_export_process(["--torchvision", "resnet19", "--out", out])
            self.assertFalse(os.path.exists(out))
        self.assertEqual(code, 2, err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("unknown torchvision model 'resnet19'", err)
        self.assertIn("did you mean resnet18", err)
        self.assertIn("image classification models", err)

    def test_torchvision_model_that_is_not_a_classifier(self):
        with tempfile.TemporaryDirectory() as d:
            code, err = run_export(["--torchvision", "fasterrcnn_resnet50_fpn", "--out", d])
        self.assertEqual(code, 2)
        self.assertIn("is a detection model", err)

    def test_options_that_go_with_another_source(self):
        with tempfile.TemporaryDirectory() as d:
            code, err = run_export(["--checkpoint", FIXTURE, "--out", d, "--kind", "cnn"])
            self.assertEqual((code, "--kind goes with --tiny-fixture" in err), (2, True), err)
            code, err = run_export(["--checkpoint", FIXTURE, "--out", d, "--image-size", "64"])
            self.assertEqual((code, "--image-size goes with --torchvision" in err), (2, True), err)
            code, err = run_export(["--tiny-fixture", d, "--kind", "cnn", "--text-files-only"])
            self.assertEqual((code, "--text-files-only goes with" in err), (2, True), err)
            code, err = run_export(["--torchvision", "resnet18"])
            self.assertEqual((code, "--out is required with --torchvision" in err), (2, True), err)
            self.assertEqual(os.listdir(d), [])


def strip_machine_floats(manifest):
    """The manifest without what PyTorch and ONNX Runtime compute in floating point (it
    differs in the last digits across CPUs: reference outputs, accuracy figures) and without
    the package versions it records (a build tag such as +cu132 or +cpu depends on the
    wheel; the files' bytes and digests are compared all the same)."""
    m = json.loads(json.dumps(manifest))
    for t in m["reference"]["outputs"].values():
        t["data"] = None
    m["reference"]["producer"] = m["exporter"] = m["export_check"] = None
    for v in m["variants"].values():
        v["max_abs_diff_vs_torch"] = v["cosine_vs_torch"] = None
    return m


def strip_digests(manifest):
    """The manifest without its files' sha256 (see assert_same_onnx)."""
    m = json.loads(json.dumps(manifest))
    m.pop("sha256", None)
    for v in m["variants"].values():
        v.pop("sha256", None)
    return m


def assert_same_onnx(test, got_path, want_path):
    """Two ONNX files with the same graph, attributes and initializer names, types and shapes
    exactly, and the same initializer values up to the last bits a CPU changes: weights
    PyTorch computes in float32 (batch-norm statistics folded into a convolution) differ by an
    ulp or two between Intel and AMD, and their fp16 and int8 forms by one step where such a
    value sits on a rounding edge."""
    import onnx
    from onnx import numpy_helper

    got, want = onnx.load(got_path), onnx.load(want_path)
    values = []
    for m in (got, want):
        values.append({i.name: numpy_helper.to_array(i) for i in m.graph.initializer})
        for i in m.graph.initializer:
            i.ClearField("raw_data")
            for field in ("float_data", "int32_data", "int64_data", "double_data"):
                i.ClearField(field)
    test.assertEqual(got.SerializeToString(), want.SerializeToString(), got_path)
    for name, w in values[1].items():
        g = values[0][name]
        test.assertEqual((g.dtype, g.shape), (w.dtype, w.shape), name)
        if w.dtype == np.float32:
            np.testing.assert_allclose(g, w, rtol=ULPS10, atol=1e-7, err_msg=name)
        elif w.dtype == np.float16:
            np.testing.assert_allclose(
                g.astype(np.float32), w.astype(np.float32),
                rtol=float(np.finfo(np.float16).eps), atol=1e-7, err_msg=name)
        else:
            diff = np.abs(g.astype(np.int64) - w.astype(np.int64))
            test.assertLessEqual(int(diff.max(initial=0)), 1, name)


class ImageFixtureChecks:
    """The committed image fixtures: models/fixtures/NAME, made by --tiny-fixture --kind KIND.
    Subclasses set the class attributes and pytorch_module()."""

    KIND = NAME = OUTPUT = None
    OUT_DIMS = FILES = None

    @classmethod
    def setUpClass(cls):
        cls.folder = os.path.join(FIXTURES, cls.NAME)
        cls.manifest = read_json(os.path.join(cls.folder, "manifest.json"))
        cls.tmp = tempfile.TemporaryDirectory()
        cls.exported = run_export(["--tiny-fixture", cls.tmp.name, "--kind", cls.KIND])

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.folder, name)

    def test_the_committed_fixture_is_what_the_exporter_makes(self):
        code, err = self.exported
        self.assertEqual(code, 0, err)
        out = self.tmp.name
        self.assertEqual(sorted(os.listdir(out)), sorted(self.FILES))
        self.assertEqual(sorted(os.listdir(self.folder)), sorted(self.FILES))
        for f in self.FILES:
            if f.endswith(".onnx"):
                assert_same_onnx(self, os.path.join(out, f), self.path(f))
            elif f != "manifest.json":
                self.assertEqual(read_bytes(os.path.join(out, f)), read_bytes(self.path(f)), f)
        new = read_json(os.path.join(out, "manifest.json"))
        self.assertEqual(
            strip_digests(strip_machine_floats(new)),
            strip_digests(strip_machine_floats(self.manifest)),
        )
        np.testing.assert_allclose(
            new["reference"]["outputs"][self.OUTPUT]["data"],
            self.manifest["reference"]["outputs"][self.OUTPUT]["data"],
            rtol=ULPS10,
            atol=1e-5,
        )

    def test_manifest_describes_the_graph(self):
        m = self.manifest
        self.assertEqual(m["name"], self.NAME)
        self.assertEqual(m["opset"], 17)
        self.assertEqual(
            m["inputs"],
            [{"name": "pixel_values", "dtype": "float32", "dims": ["batch", 3, 32, 32]}],
        )
        self.assertEqual(
            m["outputs"], [{"name": self.OUTPUT, "dtype": "float32", "dims": self.OUT_DIMS}]
        )
        for key in ["vocab_size", "type_vocab_size", "max_position_embeddings"]:
            self.assertNotIn(key, m)
        for key, file in m["files"].items():
            self.assertTrue(os.path.isfile(self.path(file)), key)
        for file, digest in m["sha256"].items():
            self.assertEqual(export.sha256(self.path(file)), digest, file)
        ref = m["reference"]
        self.assertEqual(ref["producer"].split()[0], "torch")
        pixels = ref["inputs"]["pixel_values"]
        self.assertEqual((pixels["dtype"], pixels["shape"]), ("float32", [2, 3, 32, 32]))
        # Integer arithmetic makes the reference images: exact on every platform.
        np.testing.assert_array_equal(
            reference_array(pixels), export.image_reference(2, 3, 32, 32)
        )
        out = ref["outputs"][self.OUTPUT]
        self.assertEqual((out["dtype"], out["shape"]), ("float32", [2] + self.OUT_DIMS[1:]))
        self.assertGreater(np.std(out["data"]), 0.1)

    def test_onnxruntime_reproduces_the_reference(self):
        ref = self.manifest["reference"]
        (got,) = session(self.path("model.onnx")).run(
            None, {"pixel_values": reference_array(ref["inputs"]["pixel_values"])}
        )
        assert_parity(self, got, reference_array(ref["outputs"][self.OUTPUT]), "reference")

    def test_dynamic_batch_matches_pytorch(self):
        import torch

        module = self.pytorch_module()
        sess = session(self.path("model.onnx"))
        rng = np.random.default_rng(5)
        for batch in [1, 3]:
            x = rng.uniform(-2, 2, size=(batch, 3, 32, 32)).astype(np.float32)
            (got,) = sess.run(None, {"pixel_values": x})
            with torch.no_grad():
                want = module(torch.from_numpy(x)).numpy()
            assert_parity(self, got, want, f"batch {batch}")

    def test_variants_are_written_and_their_accuracy_recorded(self):
        m = self.manifest
        self.assertEqual(sorted(m["variants"]), ["fp16", "fp32", "int8"])
        for v, info in m["variants"].items():
            self.assertEqual(export.sha256(self.path(info["file"])), info["sha256"], v)
        self.assertLess(m["variants"]["fp32"]["max_abs_diff_vs_torch"], 1e-4)
        self.assertGreater(m["variants"]["fp16"]["cosine_vs_torch"], 0.999)
        self.assertGreater(m["variants"]["int8"]["cosine_vs_torch"], 0.95)
        self.assertGreater(m["variants"]["int8"]["max_abs_diff_vs_torch"], 1e-3)
        # The variants take float32 images at any batch size too.
        x = np.random.default_rng(6).uniform(-2, 2, size=(3, 3, 32, 32)).astype(np.float32)
        (want,) = session(self.path("model.onnx")).run(None, {"pixel_values": x})
        for file, least in [("model.fp16.onnx", 0.999), ("model.int8.onnx", 0.95)]:
            sess = session(self.path(file))
            self.assertEqual(sess.get_inputs()[0].type, "tensor(float)", file)
            (got,) = sess.run(None, {"pixel_values": x})
            self.assertEqual(got.dtype, np.float32, file)
            self.assertGreater(cosine(got, want), least, file)


class TinyCnnFixtureTest(ImageFixtureChecks, unittest.TestCase):
    KIND, NAME, OUTPUT = "cnn", "tiny-cnn", "logits"
    OUT_DIMS = ["batch", 10]
    FILES = ["manifest.json", "model.onnx", "model.fp16.onnx", "model.int8.onnx"]

    def pytorch_module(self):
        return export.tiny_cnn(self.manifest["weights"]["seed"])

    def test_graph(self):
        self.assertLess(os.path.getsize(self.path("model.onnx")), 200_000)
        ops = op_types(self.path("model.onnx"))
        self.assertEqual(
            set(ops),
            {"Conv", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten", "Gemm"},
        )
        self.assertEqual(ops["Add"], 2)  # the residual adds
        self.assertEqual(self.manifest["model_type"], "tiny-cnn")
        self.assertEqual(self.manifest["weights"], {"init": "random", "seed": 0})

    def test_batch_norm_is_in_eval_mode_and_not_the_identity(self):
        import torch

        model = self.pytorch_module()
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.assertEqual(len(norms), 6)
        for bn in norms:
            self.assertFalse(bn.training)
            self.assertGreater(float(bn.running_mean.abs().max()), 0.01)
            self.assertGreater(float((bn.running_var - 1).abs().max()), 0.01)


class TinyVitFixtureTest(ImageFixtureChecks, unittest.TestCase):
    KIND, NAME, OUTPUT = "vit", "tiny-vit", "last_hidden_state"
    OUT_DIMS = ["batch", 17, 32]
    FILES = [
        "manifest.json",
        "model.onnx",
        "model.fp16.onnx",
        "model.int8.onnx",
        "model.safetensors",
        "config.json",
    ]

    def pytorch_module(self):
        _, model = export.load_checkpoint(self.folder)
        return export.encoder_module(model)

    def test_graph(self):
        import onnx

        model = onnx.load(self.path("model.onnx"))
        opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
        self.assertEqual(opsets, [17])
        ops = op_types(self.path("model.onnx"))
        # 2 layers x 2, and the final one: each one LayerNormalization, not decomposed.
        self.assertEqual(ops["LayerNormalization"], 5)
        self.assertNotIn("ReduceMean", ops)
        self.assertEqual(ops["Conv"], 1)  # the patch embedding
        config = read_json(self.path("config.json"))
        self.assertEqual(
            {k: config[k] for k in ["model_type", "hidden_size", "num_hidden_layers",
                                    "num_attention_heads", "intermediate_size", "image_size",
                                    "patch_size", "num_channels"]},
            {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 64, "image_size": 32,
             "patch_size": 8, "num_channels": 3},
        )
        self.assertEqual((self.manifest["model_type"], self.manifest["hidden_size"]), ("vit", 32))
        self.assertNotIn("weights", self.manifest)  # from the saved checkpoint


class ModelInputsTest(unittest.TestCase):
    """Which inputs a Hugging Face model's export takes, from its forward and its config."""

    def test_inputs_by_architecture(self):
        import torch
        from transformers import (AutoModel, BertConfig, DistilBertConfig, RobertaConfig,
                                  ViTConfig)

        small = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16)
        text = dict(small, vocab_size=20, max_position_embeddings=20)
        cases = [
            (BertConfig(**text), export.INPUT_NAMES),
            (BertConfig(**text, type_vocab_size=1), ["input_ids", "attention_mask"]),
            # roberta-base's config: one token type (RobertaConfig's default is 2)
            (RobertaConfig(**text, type_vocab_size=1), ["input_ids", "attention_mask"]),
            (RobertaConfig(**text, type_vocab_size=2), export.INPUT_NAMES),
            (DistilBertConfig(vocab_size=20, dim=8, n_layers=1, n_heads=2, hidden_dim=16),
             ["input_ids", "attention_mask"]),
            (ViTConfig(**small, image_size=16, patch_size=8), ["pixel_values"]),
        ]
        for config, names in cases:
            torch.manual_seed(0)
            model = AutoModel.from_config(config)
            self.assertEqual(export.model_inputs(config, model), names, config.model_type)


class ExportedModelChecks:
    """An export of a random-weight model, made once per class into a temporary folder:
    the manifest, ONNX Runtime against PyTorch at batch 1 and 3, the variants. Subclasses
    set the class attributes, checkpoint(folder) (the export's arguments) and
    pytorch_module()."""

    MODEL_TYPE = INPUTS = OUTPUT = OUT_DIMS = None
    TEXT = False

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = os.path.join(cls.tmp.name, "out")
        code, err = run_export(cls.arguments(cls.tmp.name) + ["--out", cls.out])
        if code != 0:
            cls.tmp.cleanup()
            raise AssertionError(f"export failed: {err}")
        cls.manifest = read_json(os.path.join(cls.out, "manifest.json"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.out, name)

    def feeds(self, batch, rng):
        """Inputs at batch size `batch`: text with a padded row and another length than the
        reference's; images of random pixels."""
        if not self.TEXT:
            size = self.manifest["inputs"][0]["dims"][1:]
            return {"pixel_values": rng.uniform(-2, 2, size=[batch] + size).astype(np.float32)}
        seq = 7 if batch == 1 else 12
        feeds = {
            "input_ids": rng.integers(0, self.manifest["vocab_size"], (batch, seq)),
            "attention_mask": np.ones((batch, seq), dtype=np.int64),
        }
        if batch > 1:
            feeds["attention_mask"][-1, seq - 4:] = 0
        return {n: feeds[n] for n in self.INPUTS}

    def test_manifest(self):
        m = self.manifest
        self.assertEqual(m["model_type"], self.MODEL_TYPE)
        self.assertEqual(m["opset"], 17)
        self.assertEqual([i["name"] for i in m["inputs"]], self.INPUTS)
        self.assertEqual(
            m["outputs"], [{"name": self.OUTPUT, "dtype": "float32", "dims": self.OUT_DIMS}]
        )
        self.assertEqual((m["weights"]["init"], m["weights"]["seed"]), ("random", 0))
        for file, digest in m["sha256"].items():
            self.assertEqual(export.sha256(self.path(file)), digest, file)
        ref = m["reference"]
        self.assertEqual(list(ref["inputs"]), self.INPUTS)
        for spec in m["inputs"]:
            entry = ref["inputs"][spec["name"]]
            self.assertEqual(entry["dtype"], spec["dtype"])
            self.assertEqual(entry["shape"][0], 2)
            self.assertEqual(len(entry["data"]), int(np.prod(entry["shape"])))
        self.assertEqual(ref["outputs"][self.OUTPUT]["dtype"], "float32")
        text_fields = ["vocab_size", "type_vocab_size", "max_position_embeddings",
                       "max_sequence_length"]
        if self.TEXT:
            for key in text_fields:
                self.assertIsInstance(m[key], int, key)
            self.assertEqual([i["dtype"] for i in m["inputs"]], ["int64"] * len(self.INPUTS))
            self.assertEqual(m["inputs"][0]["dims"], ["batch", "sequence"])
            self.assertIn(0, ref["inputs"]["attention_mask"]["data"])  # a padded row
        else:
            for key in text_fields:
                self.assertNotIn(key, m)
            self.assertEqual(m["inputs"][0]["dtype"], "float32")
            self.assertEqual(m["inputs"][0]["dims"][:2], ["batch", 3])
            self.assertTrue(all(isinstance(d, int) for d in m["inputs"][0]["dims"][2:]))

    def test_onnxruntime_reproduces_the_reference(self):
        ref = self.manifest["reference"]
        feeds = {n: reference_array(t) for n, t in ref["inputs"].items()}
        (got,) = session(self.path("model.onnx")).run(None, feeds)
        assert_parity(self, got, reference_array(ref["outputs"][self.OUTPUT]), "reference")
        self.assertLess(self.manifest["export_check"]["max_abs_diff_vs_torch"], 1e-4)

    def test_dynamic_batch_matches_pytorch(self):
        import torch

        module = self.pytorch_module()
        sess = session(self.path("model.onnx"))
        rng = np.random.default_rng(7)
        for batch in [1, 3]:
            feeds = self.feeds(batch, rng)
            (got,) = sess.run(None, feeds)
            with torch.no_grad():
                want = module(*[torch.from_numpy(feeds[n]) for n in self.INPUTS]).numpy()
            assert_parity(self, got, want, f"batch {batch}")

    def test_variants_are_close(self):
        m = self.manifest
        self.assertEqual(sorted(m["variants"]), ["fp16", "fp32", "int8"])
        for v, info in m["variants"].items():
            self.assertEqual(export.sha256(self.path(info["file"])), info["sha256"], v)
        self.assertGreater(m["variants"]["fp16"]["cosine_vs_torch"], 0.999)
        self.assertGreater(m["variants"]["int8"]["cosine_vs_torch"], 0.95)
        feeds = self.feeds(3, np.random.default_rng(8))
        (want,) = session(self.path("model.onnx")).run(None, feeds)
        for file, least in [("model.fp16.onnx", 0.999), ("model.int8.onnx", 0.95)]:
            (got,) = session(self.path(file)).run(None, feeds)
            self.assertEqual((got.dtype, got.shape), (np.float32, want.shape), file)
            self.assertGreater(cosine(got, want), least, file)


class HuggingFaceExportChecks(ExportedModelChecks):
    """A checkpoint folder with config.json only: random weights, which the export writes to
    model.safetensors next to config.json."""

    CONFIG = None

    @classmethod
    def arguments(cls, folder):
        checkpoint = os.path.join(folder, "checkpoint")
        cls.CONFIG().save_pretrained(checkpoint)
        return ["--checkpoint", checkpoint]

    def pytorch_module(self):
        # The weights the export wrote: loading them checks model.safetensors too.
        _, model = export.load_checkpoint(self.out)
        return export.encoder_module(model, self.INPUTS)

    def test_checkpoint_files(self):
        self.assertEqual(
            self.manifest["files"],
            {"onnx": "model.onnx", "safetensors": "model.safetensors", "config": "config.json"},
        )
        self.assertEqual(read_json(self.path("config.json"))["model_type"], self.MODEL_TYPE)


class RobertaExportTest(HuggingFaceExportChecks, unittest.TestCase):
    MODEL_TYPE, TEXT, OUTPUT = "roberta", True, "last_hidden_state"
    INPUTS = ["input_ids", "attention_mask"]  # type_vocab_size 1: no token types
    OUT_DIMS = ["batch", "sequence", 32]

    @staticmethod
    def CONFIG():
        from transformers import RobertaConfig

        return RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=40, type_vocab_size=1)

    def test_positions_after_the_padding_index(self):
        # RoBERTa numbers positions from padding_idx + 1: 40 embeddings, 38 tokens at most.
        m = self.manifest
        self.assertEqual((m["max_position_embeddings"], m["max_sequence_length"]), (40, 38))
        self.assertEqual(m["type_vocab_size"], 1)
        ids = np.full((1, 38), 5, dtype=np.int64)
        (got,) = session(self.path("model.onnx")).run(
            None, {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        )
        self.assertEqual(got.shape, (1, 38, 32))


class DistilBertExportTest(HuggingFaceExportChecks, unittest.TestCase):
    MODEL_TYPE, TEXT, OUTPUT = "distilbert", True, "last_hidden_state"
    INPUTS = ["input_ids", "attention_mask"]
    OUT_DIMS = ["batch", "sequence", 32]

    @staticmethod
    def CONFIG():
        from transformers import DistilBertConfig

        return DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                max_position_embeddings=40)


class VitExportTest(HuggingFaceExportChecks, unittest.TestCase):
    MODEL_TYPE, OUTPUT = "vit", "last_hidden_state"
    INPUTS = ["pixel_values"]
    OUT_DIMS = ["batch", 10, 32]  # (48 / 16)^2 patches and the class token

    @staticmethod
    def CONFIG():
        from transformers import ViTConfig

        return ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, image_size=48, patch_size=16)

    def test_image_size_is_fixed(self):
        self.assertEqual(self.manifest["inputs"][0]["dims"], ["batch", 3, 48, 48])
        self.assertEqual(op_types(self.path("model.onnx"))["LayerNormalization"], 5)


class TorchvisionExportChecks(ExportedModelChecks):
    NAME = SIZE = None
    OUTPUT, INPUTS = "logits", ["pixel_values"]
    OUT_DIMS = ["batch", 1000]

    @classmethod
    def arguments(cls, folder):
        return ["--torchvision", cls.NAME, "--image-size", str(cls.SIZE)]

    @property
    def MODEL_TYPE(self):
        return f"torchvision:{self.NAME}"

    def pytorch_module(self):
        model = export.load_torchvision(self.NAME, self.manifest["weights"]["seed"])
        export.calibrate_batch_norm(
            model, export.image_reference(export.CALIBRATION_IMAGES, 3, self.SIZE, self.SIZE)
        )
        return model

    def test_random_network_keeps_its_scale(self):
        m = self.manifest
        self.assertEqual(m["inputs"][0]["dims"], ["batch", 3, self.SIZE, self.SIZE])
        self.assertEqual(m["files"], {"onnx": "model.onnx"})
        self.assertIn("batch_norm", m["weights"])
        self.assertIn("torchvision", m["exporter"])
        logits = m["reference"]["outputs"]["logits"]["data"]
        self.assertGreater(np.std(logits), 1e-3)  # not the 1e-10 of identity batch norm
        self.assertNotIn("BatchNormalization", op_types(self.path("model.onnx")))


class ResNet18ExportTest(TorchvisionExportChecks, unittest.TestCase):
    NAME, SIZE = "resnet18", 48


class MobileNetV3SmallExportTest(TorchvisionExportChecks, unittest.TestCase):
    NAME, SIZE = "mobilenet_v3_small", 64


if __name__ == "__main__":
    unittest.main()
