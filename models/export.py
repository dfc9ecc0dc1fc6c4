#!/usr/bin/env python3
"""Export a Hugging Face BERT-family checkpoint from a local folder to ONNX, for the harness.

The output folder holds everything every runtime needs, all from one checkpoint:

    model.onnx          torch.onnx.export of the encoder; output `last_hidden_state`
    model.safetensors   the checkpoint's weights (candle loads these)
    config.json         the checkpoint's config (candle and the harness read it)
    tokenizer files     copied when present (tokenizer.json, vocab.txt, ...)
    sentence-transformers files, when present (modules.json, 1_Pooling/, ...)
    model.fp16.onnx     float16 weights and compute, float32 inputs/outputs
    model.int8.onnx     int8 dynamic quantization, per-channel weights
    manifest.json       inputs, dtypes, dynamic dims, vocabulary size, the variants with
                        their accuracy, and reference outputs computed by PyTorch on fixed
                        inputs

Usage:
    python models/export.py --checkpoint DIR --out OUT [--opset 17] [--static]
                            [--variants fp32,fp16,int8]
    python models/export.py --tiny-fixture OUT [--seed 0] [--text-files-only]

`--tiny-fixture` builds a small BERT with random weights (fixed seed) and exports it;
the committed test fixture models/fixtures/tiny-bert was made this way. It also writes the
fixture's text side: a 128-token WordPiece tokenizer (tokenizer.json, vocab.txt,
tokenizer_config.json, special_tokens_map.json), sentence-transformers files like
all-MiniLM-L6-v2's (modules.json, 1_Pooling/config.json, sentence_bert_config.json; mean
pooling, then L2 normalisation) and embeddings_reference.json: fixed sentences, their token
ids and their embeddings by ONNX Runtime. With `--text-files-only` only these are (re)written,
from the model.onnx already in OUT.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings

# Local folders only (no hub access exists here), and quiet: the export prints one line.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
warnings.filterwarnings("ignore", module=r"transformers.*")
warnings.filterwarnings("ignore", module=r"onnxconverter_common.*")

MANIFEST_SCHEMA = 1
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT_NAME = "last_hidden_state"
# Files copied verbatim from the checkpoint when they exist.
SIDE_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
]
# Reference inputs: two rows, the second one padded, so that masking is checked too.
REF_BATCH, REF_SEQ, REF_PAD = 2, 16, 5
SUPPORTED_TYPES = {"bert"}
VARIANTS = ["fp32", "fp16", "int8"]
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


class ExportError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def reference_inputs(vocab_size, type_vocab_size):
    """Deterministic token ids inside the vocabulary (no RNG: identical on every platform)."""
    ids, mask, types = [], [], []
    for b in range(REF_BATCH):
        row_ids, row_mask, row_types = [], [], []
        for s in range(REF_SEQ):
            row_ids.append((b * 7919 + s * 104729 + 101) % vocab_size)
            padded = b == REF_BATCH - 1 and s >= REF_SEQ - REF_PAD
            row_mask.append(0 if padded else 1)
            row_types.append(1 if (type_vocab_size > 1 and s >= REF_SEQ // 2) else 0)
        ids.append(row_ids)
        mask.append(row_mask)
        types.append(row_types)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(checkpoint):
    import torch
    from transformers import AutoConfig, AutoModel

    config_path = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(config_path):
        raise ExportError(
            f"{config_path} not found: --checkpoint must be a Hugging Face model folder "
            "(config.json plus model.safetensors or pytorch_model.bin)"
        )
    config = AutoConfig.from_pretrained(checkpoint)
    if config.model_type not in SUPPORTED_TYPES:
        raise ExportError(
            f"model_type '{config.model_type}' in {config_path} is not supported by this exporter "
            f"(supported: {', '.join(sorted(SUPPORTED_TYPES))})"
        )
    model = AutoModel.from_pretrained(
        checkpoint, attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    return config, model


def encoder_module(model):
    """Wraps the model so torch.onnx.export sees positional inputs and one output."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            # transformers 5 takes keyword arguments only.
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            )
            return out.last_hidden_state

    return Encoder(model).eval()


def export(checkpoint, out, opset=17, dynamic=True, name=None, variants=None):
    import numpy as np
    import torch

    config, model = load_checkpoint(checkpoint)
    os.makedirs(out, exist_ok=True)
    encoder = encoder_module(model)

    ref = reference_inputs(config.vocab_size, getattr(config, "type_vocab_size", 1))
    tensors = tuple(torch.tensor(ref[n], dtype=torch.int64) for n in INPUT_NAMES)
    with torch.no_grad():
        torch_out = encoder(*tensors).numpy().astype(np.float32)

    onnx_path = os.path.join(out, "model.onnx")
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES}
        dynamic_axes[OUTPUT_NAME] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            tensors,
            onnx_path,
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )

    # The weights candle reads: the checkpoint's own file when it has one, else a fresh dump.
    st_src = os.path.join(checkpoint, "model.safetensors")
    st_dst = os.path.join(out, "model.safetensors")
    if os.path.isfile(st_src):
        if os.path.abspath(st_src) != os.path.abspath(st_dst):
            shutil.copyfile(st_src, st_dst)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, st_dst)
    for rel in SIDE_FILES:
        src = os.path.join(checkpoint, rel)
        if os.path.isfile(src):
            dst = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.abspath(src) != os.path.abspath(dst):
                shutil.copyfile(src, dst)

    ort_check = check_with_onnxruntime(onnx_path, ref, torch_out)
    variant_info = {}
    for v in variants or VARIANTS:
        path = os.path.join(out, VARIANT_FILES[v])
        if v == "fp16":
            write_fp16(onnx_path, path)
        elif v == "int8":
            write_int8(onnx_path, path)
        variant_info[v] = dict(
            file=VARIANT_FILES[v], sha256=sha256(path), **accuracy(path, ref, torch_out)
        )
    dims = ["batch", "sequence"] if dynamic else [REF_BATCH, REF_SEQ]
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "name": name or os.path.basename(os.path.normpath(checkpoint)),
        "model_type": config.model_type,
        "opset": opset,
        "files": {
            "onnx": "model.onnx",
            "safetensors": "model.safetensors",
            "config": "config.json",
        },
        "sha256": {
            "model.onnx": sha256(onnx_path),
            "model.safetensors": sha256(st_dst),
        },
        "inputs": [{"name": n, "dtype": "int64", "dims": dims} for n in INPUT_NAMES],
        "outputs": [
            {"name": OUTPUT_NAME, "dtype": "float32", "dims": dims + [config.hidden_size]}
        ],
        "vocab_size": config.vocab_size,
        "type_vocab_size": getattr(config, "type_vocab_size", 1),
        "max_position_embeddings": config.max_position_embeddings,
        "hidden_size": config.hidden_size,
        "reference": {
            "producer": f"torch {torch.__version__} eager, float32",
            "inputs": {
                n: {"shape": [REF_BATCH, REF_SEQ], "data": sum(ref[n], [])} for n in INPUT_NAMES
            },
            "outputs": {
                OUTPUT_NAME: {
                    "shape": list(torch_out.shape),
                    "data": [float(x) for x in torch_out.reshape(-1)],
                }
            },
        },
        "export_check": ort_check,
        "variants": variant_info,
        "exporter": versions(),
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest


def check_with_onnxruntime(onnx_path, ref, torch_out):
    """Runs the exported graph in ONNX Runtime on the reference inputs; the export is
    refused when it does not reproduce PyTorch."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    feeds = {n: np.array(ref[n], dtype=np.int64) for n in INPUT_NAMES}
    (got,) = sess.run([OUTPUT_NAME], feeds)
    max_abs = float(np.max(np.abs(got - torch_out)))
    if not max_abs <= 1e-4:
        raise ExportError(
            f"exported graph disagrees with PyTorch: max abs diff {max_abs:.3g} > 1e-4"
        )
    return {"onnxruntime": ort.__version__, "max_abs_diff_vs_torch": max_abs}


def write_fp16(src, dst):
    """float16 weights and compute; inputs and outputs stay float32 (keep_io_types)."""
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(src), keep_io_types=True)
    onnx.save(model, dst)


def write_int8(src, dst):
    """Dynamic quantization: int8 weights per output channel, activations quantized at run
    time. Per-tensor int8 loses too much on BERT (pooled cosine about 0.89 on MiniLM)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)


def accuracy(path, ref, torch_out):
    """A variant's outputs on the reference inputs in ONNX Runtime, against PyTorch fp32.
    A variant ONNX Runtime cannot load or run is an export error."""
    import numpy as np
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feeds = {n: np.array(ref[n], dtype=np.int64) for n in INPUT_NAMES}
        (got,) = sess.run([OUTPUT_NAME], feeds)
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime cannot run {path}: {e}") from e
    a = got.astype(np.float64).reshape(-1)
    b = torch_out.astype(np.float64).reshape(-1)
    return {
        "max_abs_diff_vs_torch": float(np.max(np.abs(a - b))),
        "cosine_vs_torch": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
    }


def versions():
    import onnx
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
    }


def make_tiny_checkpoint(folder, seed):
    """A 2-layer BERT with hidden size 32 and random weights: a few hundred KB."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
    )
    model = BertModel(config, add_pooling_layer=False)
    # Default init (std 0.02) leaves activations tiny; a wider spread makes parity meaningful.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
            elif "LayerNorm.weight" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    model.save_pretrained(folder, safe_serialization=True)


# The tiny fixture's tokenizer: BERT's WordPiece with 128 entries, ids in this order.
TINY_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_PUNCTUATION = [".", ",", "!", "?", "'", "-"]
TINY_WORDS = (
    "the is of and to in it on at for with this that was are be as by not or from hi hello "
    "world cat dog sat mat sun day good quick brown fox jumps over lazy run red big small one "
    "two new old how what who you we they my ran play book"
).split()
TINY_MAX_SEQ = 64
# Sentences of embeddings_reference.json: a short one; punctuation and capitals; words that
# fall apart into ## pieces, characters outside the vocabulary ([UNK]) and an accent that
# the normalizer strips; one longer than TINY_MAX_SEQ tokens, so truncated; plural pieces.
TINY_REFERENCE_SENTENCES = [
    "hi",
    "The cat sat on the mat.",
    "Hello, World! Is THIS the Quick Brown Fox?",
    "A zebra ate my homework \U0001f642 at the caf\u00e9 @ 5pm",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 8),
    "Two dogs and one cat ran in the sun.",
]
TEXT_FILES = [
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "embeddings_reference.json",
]


def tiny_vocab():
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    vocab = (
        TINY_SPECIAL_TOKENS
        + letters
        + digits
        + TINY_PUNCTUATION
        + ["##" + c for c in letters]
        + TINY_WORDS
    )
    assert len(vocab) == 128 and len(set(vocab)) == 128, len(vocab)
    return vocab


def tiny_tokenizer_json(vocab):
    """tokenizer.json of the Hugging Face `tokenizers` library, laid out like a BERT one
    (all-MiniLM-L6-v2's) but with padding and truncation off. Written as plain JSON so that
    the bytes do not depend on the installed tokenizers version."""
    ids = {t: i for i, t in enumerate(vocab)}

    def special(token, type_id):
        return {"SpecialToken": {"id": token, "type_id": type_id}}

    def sequence(seq, type_id):
        return {"Sequence": {"id": seq, "type_id": type_id}}

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": ids[t],
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for t in TINY_SPECIAL_TOKENS
        ],
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": True,
            "handle_chinese_chars": True,
            "strip_accents": None,
            "lowercase": True,
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)],
            "pair": [
                special("[CLS]", 0),
                sequence("A", 0),
                special("[SEP]", 0),
                sequence("B", 1),
                special("[SEP]", 1),
            ],
            "special_tokens": {
                t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in ["[CLS]", "[SEP]"]
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": ids,
        },
    }


def write_json(path, obj, compact_numbers=False):
    """Indented JSON with a final newline; with compact_numbers, lists of numbers stay on one
    line each."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    if compact_numbers:
        text = re.sub(
            r"\[\s+([-+0-9.eE,\s]*?)\s+\]",
            lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]",
            text,
        )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def mean_pooled(hidden, mask):
    """Mean over the tokens the mask keeps, then L2 normalisation (sentence-transformers'
    Pooling and Normalize modules), in float64."""
    import numpy as np

    h = hidden.astype(np.float64)
    m = mask.astype(np.float64)[:, :, None]
    mean = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def embeddings_reference(out):
    """The reference sentences through OUT's tokenizer.json and model.onnx: each on its own
    (batch 1, no padding) and all in one padded batch; both pooled and normalised."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    tokenizer.enable_truncation(max_length=TINY_MAX_SEQ)
    token_ids = [tokenizer.encode(s).ids for s in TINY_REFERENCE_SENTENCES]

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        os.path.join(out, "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )

    def run(ids, mask):
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = sess.run([OUTPUT_NAME], feeds)
        return mean_pooled(hidden, mask)

    single = np.concatenate(
        [run(np.array([row], np.int64), np.ones((1, len(row)), np.int64)) for row in token_ids]
    )
    width = max(len(ids) for ids in token_ids)
    ids = np.zeros((len(token_ids), width), dtype=np.int64)
    mask = np.zeros((len(token_ids), width), dtype=np.int64)
    for r, row in enumerate(token_ids):
        ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
    batched = run(ids, mask)
    diff = float(np.max(np.abs(single - batched)))
    if not diff <= 1e-5:
        raise ExportError(f"padded batch disagrees with single runs: max abs diff {diff:.3g}")

    def rows(a):
        return [[round(float(x), 8) for x in r] for r in a]

    return {
        "sentences": TINY_REFERENCE_SENTENCES,
        "max_seq_length": TINY_MAX_SEQ,
        "token_ids": token_ids,
        "pooling": "mean",
        "normalize": True,
        "embeddings": rows(single),
        "batched_embeddings": rows(batched),
        "max_abs_diff_batched_vs_single": diff,
        "model": {"file": "model.onnx", "sha256": sha256(os.path.join(out, "model.onnx"))},
        "producer": f"onnxruntime {ort.__version__} + numpy",
    }


def write_tiny_text_files(out):
    """The tiny fixture's tokenizer, sentence-transformers configuration and embeddings
    reference (TEXT_FILES), next to its model.onnx; nothing else in OUT is touched."""
    vocab = tiny_vocab()
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in vocab))
    write_json(os.path.join(out, "tokenizer.json"), tiny_tokenizer_json(vocab))
    special = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    write_json(
        os.path.join(out, "tokenizer_config.json"),
        {
            "do_lower_case": True,
            **special,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "tokenizer_class": "BertTokenizer",
            "model_max_length": TINY_MAX_SEQ,
        },
    )
    write_json(os.path.join(out, "special_tokens_map.json"), special)
    modules = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    write_json(
        os.path.join(out, "modules.json"),
        [
            {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{t}"}
            for i, (path, t) in enumerate(modules)
        ],
    )
    write_json(
        os.path.join(out, "1_Pooling", "config.json"),
        {
            "word_embedding_dimension": 32,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    write_json(
        os.path.join(out, "sentence_bert_config.json"),
        {"max_seq_length": TINY_MAX_SEQ, "do_lower_case": False},
    )
    write_json(
        os.path.join(out, "embeddings_reference.json"),
        embeddings_reference(out),
        compact_numbers=True,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="local Hugging Face model folder (BERT family)")
    src.add_argument("--tiny-fixture", metavar="OUT", help="build and export the tiny test BERT")
    p.add_argument("--out", help="output folder (with --checkpoint)")
    p.add_argument("--name", help="model name recorded in the manifest")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static", action="store_true", help="fixed batch/sequence axes")
    p.add_argument("--seed", type=int, default=0, help="seed for --tiny-fixture weights")
    p.add_argument(
        "--text-files-only",
        action="store_true",
        help="with --tiny-fixture: only (re)write the tokenizer, sentence-transformers and "
        "embeddings_reference.json files, from the model.onnx already in OUT",
    )
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="precision variants to write, comma-separated (fp32 is always written)",
    )
    a = p.parse_args(argv)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"export.py: error: unknown variant(s) {', '.join(unknown)} "
              f"(known: {', '.join(VARIANTS)})", file=sys.stderr)
        return 2
    if "fp32" not in variants:
        variants.insert(0, "fp32")
    try:
        if a.text_files_only:
            if not a.tiny_fixture:
                raise ExportError("--text-files-only goes with --tiny-fixture")
            if not os.path.isfile(os.path.join(a.tiny_fixture, "model.onnx")):
                raise ExportError(
                    f"{a.tiny_fixture}/model.onnx not found: export the fixture first"
                )
            write_tiny_text_files(a.tiny_fixture)
            print(f"wrote {', '.join(TEXT_FILES)} to {a.tiny_fixture}", file=sys.stderr)
            return 0
        if a.tiny_fixture:
            with tempfile.TemporaryDirectory() as tmp:
                make_tiny_checkpoint(tmp, a.seed)
                m = export(
                    tmp, a.tiny_fixture, a.opset, not a.static, a.name or "tiny-bert", variants
                )
            write_tiny_text_files(a.tiny_fixture)
            out = a.tiny_fixture
        else:
            if not a.out:
                raise ExportError("--out is required with --checkpoint")
            if not os.path.isdir(a.checkpoint):
                raise ExportError(f"checkpoint folder {a.checkpoint} does not exist")
            m = export(a.checkpoint, a.out, a.opset, not a.static, a.name, variants)
            out = a.out
    except ExportError as e:
        print(f"export.py: error: {e}", file=sys.stderr)
        return 2
    acc = ", ".join(
        f"{v} cosine {i['cosine_vs_torch']:.6f} max abs diff {i['max_abs_diff_vs_torch']:.2e}"
        for v, i in m["variants"].items()
    )
    print(f"exported {m['name']} to {out} (opset {m['opset']}; vs torch: {acc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
