#!/usr/bin/env python3
"""Cast a safetensors file's floating-point weights between float32 and float16.

The GPU bundle (scripts/gpu-bundle.sh) carries a model's weights in float16, half their size;
scripts/gpu-run.sh widens them back to float32 before exporting the model there. Tensors of
other types (token position ids, int64) are kept as they are.

Usage:
    python models/cast_weights.py {float16|float32} SRC DST
"""

import sys

import numpy as np
from safetensors.numpy import load_file, save_file

CASTS = {"float16": (np.float32, np.float16), "float32": (np.float16, np.float32)}


def cast(src, dst, to):
    """Writes src's tensors to dst with the other float width's tensors cast to `to`."""
    frm, target = CASTS[to]
    t = load_file(src)
    out = {k: (v.astype(target) if v.dtype == frm else v) for k, v in t.items()}
    meta = {"format": "pt"}
    if to == "float16":
        meta["note"] = "weights rounded to float16"
    save_file(out, dst, metadata=meta)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in CASTS:
        sys.exit("usage: cast_weights.py {float16|float32} SRC DST")
    cast(argv[1], argv[2], argv[0])


if __name__ == "__main__":
    main()
