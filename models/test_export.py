"""Tests of the exporter: the committed fixture is reproducible, the exported graph has
working dynamic axes and matches PyTorch, and bad checkpoints are clear errors."""

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export  # noqa: E402

FIXTURE = os.path.join(HERE, "fixtures", "tiny-bert")


def run_export(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = export.main(argv)
    return code, err.getvalue()


class FixtureTest(unittest.TestCase):
    def test_the_committed_fixture_is_what_the_exporter_makes(self):
        with tempfile.TemporaryDirectory() as out:
            code, err = run_export(["--tiny-fixture", out])
            self.assertEqual(code, 0, err)
            with open(os.path.join(out, "manifest.json")) as f:
                new = json.load(f)
        with open(os.path.join(FIXTURE, "manifest.json")) as f:
            committed = json.load(f)
        self.assertEqual(new["inputs"], committed["inputs"])
        self.assertEqual(new["reference"]["inputs"], committed["reference"]["inputs"])
        self.assertEqual(new["sha256"]["model.safetensors"], committed["sha256"]["model.safetensors"])
        a = np.array(new["reference"]["outputs"]["last_hidden_state"]["data"])
        b = np.array(committed["reference"]["outputs"]["last_hidden_state"]["data"])
        self.assertLess(float(np.max(np.abs(a - b))), 1e-6)

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


if __name__ == "__main__":
    unittest.main()
