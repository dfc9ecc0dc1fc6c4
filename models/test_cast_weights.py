"""Weights cast to float16 for the GPU bundle and back: floats rounded as numpy rounds them,
other tensors untouched."""

import os
import sys
import tempfile
import unittest

import numpy as np
from safetensors.numpy import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cast_weights  # noqa: E402


class CastWeightsTest(unittest.TestCase):
    def test_round_trip_rounds_floats_and_keeps_ids(self):
        rng = np.random.default_rng(0)
        w = rng.standard_normal((4, 5)).astype(np.float32)
        ids = np.arange(7, dtype=np.int64).reshape(1, 7)
        with tempfile.TemporaryDirectory() as d:
            src, half, back = (os.path.join(d, n) for n in ("a", "b", "c"))
            save_file({"w": w, "ids": ids}, src)
            cast_weights.main(["float16", src, half])
            cast_weights.main(["float32", half, back])
            h, b = load_file(half), load_file(back)
            self.assertEqual(h["w"].dtype, np.float16)
            self.assertEqual(b["w"].dtype, np.float32)
            np.testing.assert_array_equal(b["w"], w.astype(np.float16).astype(np.float32))
            self.assertGreater(np.abs(b["w"] - w).max(), 0)
            for t in (h, b):
                self.assertEqual(t["ids"].dtype, np.int64)
                np.testing.assert_array_equal(t["ids"], ids)

    def test_a_wrong_width_is_refused(self):
        with self.assertRaises(SystemExit):
            cast_weights.main(["bfloat16", "a", "b"])


if __name__ == "__main__":
    unittest.main()
