"""The PyTorch reference used for GPU comparisons agrees with transformers and runs."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "fixtures", "tiny-bert")
sys.path.insert(0, HERE)
import torch_bench  # noqa: E402


class TorchBenchTest(unittest.TestCase):
    def test_plain_bert_matches_transformers_with_padding(self):
        from transformers import BertModel

        plain, how = torch_bench.plain_bert(FIXTURE, torch)
        self.assertIn("plain torch", how)
        ref = BertModel.from_pretrained(FIXTURE, attn_implementation="eager", add_pooling_layer=False).eval()
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 128, (3, 11), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 7:] = 0
        types = torch.zeros_like(ids)
        with torch.no_grad():
            a = plain(ids, mask, types)
            b = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        self.assertLess((a - b).abs().max().item(), 1e-5)

    def test_cli_times_each_scenario_and_refuses_a_missing_gpu_or_folder(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "t.json")
            script = os.path.join(HERE, "torch_bench.py")
            r = subprocess.run(
                [sys.executable, script, "--model", FIXTURE, "--device", "cpu", "--dtype", "fp32",
                 "--batch", "1,2", "--seq", "8", "--warmup", "1", "--min-time", "0.05", "--min-samples", "5",
                 "--json", out],
                capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            rows = json.load(open(out))
            self.assertEqual([x["batch"] for x in rows], [1, 2])
            self.assertTrue(all(x["samples"] >= 5 and x["p50_ms"] > 0 for x in rows))
            r = subprocess.run([sys.executable, script, "--model", d, "--device", "cpu"], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("config.json is missing", r.stderr)
            if not torch.cuda.is_available():
                r = subprocess.run([sys.executable, script, "--model", FIXTURE, "--device", "cuda"], capture_output=True, text=True)
                self.assertIn("sees no CUDA device", r.stderr)


if __name__ == "__main__":
    unittest.main()
