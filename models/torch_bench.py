#!/usr/bin/env python3
"""PyTorch eager reference timings for a BERT checkpoint folder, on a GPU or the CPU.

The GPU comparison's yardstick: the same checkpoint (model.safetensors + config.json) that
candle runs and the ONNX export came from, run by PyTorch eagerly, timed the way the harness
times (warm-up, then each inference between two clock reads, the device synchronized before
the clock stops). Uses transformers' BertModel when it is installed, else a plain-torch BERT
encoder read straight from the safetensors file, so it runs where only torch is.

Usage:
    python models/torch_bench.py --model DIR [--device cuda] [--dtype fp32,fp16]
        [--batch 1,8,32] [--seq 128] [--warmup 10] [--min-time 3] [--min-samples 30] [--json OUT]
Prints one line per scenario (p50/p90/p99 ms, items/s) and, with --json, writes them all.
"""

import argparse
import json
import math
import os
import struct
import sys
import time


def read_safetensors(path, torch):
    """The tensors of a safetensors file (8-byte header length, JSON header, raw data)."""
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=dtypes[meta["dtype"]])
        out[name] = t.reshape(meta["shape"])
    return out


def plain_bert(folder, torch):
    """A BERT encoder in plain torch (post-LayerNorm, GELU-erf), from the checkpoint."""
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = read_safetensors(os.path.join(folder, "model.safetensors"), torch)
    prefix = "bert." if any(k.startswith("bert.") for k in w) else ""
    g = lambda k: w[prefix + k]
    heads, layers, eps = cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg.get("layer_norm_eps", 1e-12)
    F = torch.nn.functional

    class Bert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(v.float(), requires_grad=False) for k, v in w.items()})

        def t(self, k):
            return self.p[(prefix + k).replace(".", "__")]

        def forward(self, input_ids, attention_mask, token_type_ids):
            b, s = input_ids.shape
            pos = torch.arange(s, device=input_ids.device).unsqueeze(0)
            x = self.t("embeddings.word_embeddings.weight")[input_ids]
            x = x + self.t("embeddings.token_type_embeddings.weight")[token_type_ids]
            x = x + self.t("embeddings.position_embeddings.weight")[pos]
            x = F.layer_norm(x, x.shape[-1:], self.t("embeddings.LayerNorm.weight"), self.t("embeddings.LayerNorm.bias"), eps)
            mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            h = x.shape[-1]
            d = h // heads
            for i in range(layers):
                L = f"encoder.layer.{i}."
                lin = lambda y, n: F.linear(y, self.t(L + n + ".weight"), self.t(L + n + ".bias"))
                split = lambda y: y.view(b, s, heads, d).transpose(1, 2)
                q, k, v = (split(lin(x, "attention.self." + n)) for n in ("query", "key", "value"))
                a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1) @ v
                a = a.transpose(1, 2).reshape(b, s, h)
                x = F.layer_norm(lin(a, "attention.output.dense") + x, (h,), self.t(L + "attention.output.LayerNorm.weight"), self.t(L + "attention.output.LayerNorm.bias"), eps)
                f = lin(F.gelu(lin(x, "intermediate.dense")), "output.dense")
                x = F.layer_norm(f + x, (h,), self.t(L + "output.LayerNorm.weight"), self.t(L + "output.LayerNorm.bias"), eps)
            return x

    return Bert(), "plain torch BERT (no transformers)"


def load(folder, torch):
    try:
        from transformers import BertModel

        m = BertModel.from_pretrained(folder, attn_implementation="eager", add_pooling_layer=False)
        return m, "transformers BertModel (eager attention)"
    except Exception:
        return plain_bert(folder, torch)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="fp32,fp16")
    p.add_argument("--batch", default="1,8,32")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--min-samples", type=int, default=30)
    p.add_argument("--json")
    a = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("torch_bench.py: PyTorch is not installed for this interpreter")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"torch_bench.py: --device {a.device}: PyTorch sees no CUDA device")
    for f in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(a.model, f)):
            sys.exit(f"torch_bench.py: {os.path.join(a.model, f)} is missing (export with models/export.py)")
    model, how = load(a.model, torch)
    model.eval()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    vocab = json.load(open(os.path.join(a.model, "config.json")))["vocab_size"]
    rows = []
    for dt in a.dtype.split(","):
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dt]
        m = model.to(dev, dtype=dtype)
        for b in [int(x) for x in a.batch.split(",")]:
            g = torch.Generator().manual_seed(42)
            ids = torch.randint(0, vocab, (b, a.seq), generator=g).to(dev)
            mask = torch.ones_like(ids)
            types = torch.zeros_like(ids)
            with torch.inference_mode():
                run = lambda: m(input_ids=ids, attention_mask=mask, token_type_ids=types)
                for _ in range(a.warmup):
                    run()
                sync()
                times, start = [], time.perf_counter()
                while len(times) < a.min_samples or time.perf_counter() - start < a.min_time:
                    t = time.perf_counter()
                    run()
                    sync()
                    times.append((time.perf_counter() - t) * 1e3)
            times.sort()
            q = lambda p: times[max(0, math.ceil(p / 100 * len(times)) - 1)]
            row = {
                "runtime": "pytorch-eager", "implementation": how, "torch": torch.__version__,
                "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
                "dtype": dt, "batch": b, "seq": a.seq, "samples": len(times),
                "p50_ms": q(50), "p90_ms": q(90), "p99_ms": q(99),
                "items_per_s": b * len(times) / (sum(times) / 1e3),
            }
            rows.append(row)
            print(f"pytorch-eager {dt} b{b} s{a.seq}: p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms, {row['items_per_s']:.1f} items/s ({len(times)} samples)", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
