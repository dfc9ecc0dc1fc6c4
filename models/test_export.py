"""Tests of the exporter: the committed fixture is reproducible, the exported graph has
working dynamic axes and matches PyTorch, the fixture's tokenizer and sentence-transformers
files reproduce its embeddings reference, and bad checkpoints are clear errors."""

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export  # noqa: E402

FIXTURE = os.path.join(HERE, "fixtures", "tiny-bert")


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


if __name__ == "__main__":
    unittest.main()
