#!/usr/bin/env python3
"""Export a Hugging Face encoder or a torchvision image model to ONNX, for the harness.

Sources:

    --checkpoint DIR    a local Hugging Face model folder: config.json plus model.safetensors
                        or pytorch_model.bin, of an encoder that transformers builds with
                        AutoModel: text encoders (BERT, RoBERTa, DistilBERT, ...) and image
                        encoders (ViT, ...). A folder with config.json and no weights is
                        exported with random weights (seeded by --seed).
    --torchvision NAME  a torchvision image classification model (resnet18, resnet50,
                        mobilenet_v3_small, efficientnet_b0, ...) with random weights (seeded
                        by --seed), for --image-size x --image-size images (224).
    --tiny-fixture OUT  the small test models committed under models/fixtures (--kind).

The output folder holds everything every runtime needs, all from one model:

    model.onnx          torch.onnx.export (the TorchScript-based exporter) of the model
    model.fp16.onnx     float16 weights and compute, float32 inputs/outputs
    model.int8.onnx     int8 dynamic quantization, per-channel weights
    model.safetensors   Hugging Face models: the checkpoint's weights (candle loads these), or
                        the random ones
    config.json         Hugging Face models: the checkpoint's config (candle and the harness
                        read it)
    tokenizer files     copied when present (tokenizer.json, vocab.txt, ...)
    sentence-transformers files, when present (modules.json, 1_Pooling/, ...)
    manifest.json       inputs, dtypes, dynamic dims, vocabulary size (text models), the
                        variants with their accuracy, and reference outputs computed by
                        PyTorch (eager, float32) on fixed inputs

Inputs and outputs, by kind of model:

    text encoder    int64 [batch, sequence]: input_ids, attention_mask, and token_type_ids
                    when the model's forward takes them and its config has more than one
                    token type (BERT: yes; RoBERTa, type_vocab_size 1: no; DistilBERT: no);
                    output last_hidden_state float32 [batch, sequence, hidden]
    image encoder   pixel_values float32 [batch, channels, H, W], H and W fixed by
                    config.json's image_size; output last_hidden_state float32 (ViT:
                    [batch, patches + 1, hidden])
    torchvision     pixel_values float32 [batch, 3, H, W], H = W = --image-size; output
                    logits float32 [batch, classes]

The batch axis is dynamic, and so is the sequence axis of text models, unless --static.

manifest.json: schema, name, model_type ("bert", "vit", "torchvision:resnet18", ...), opset,
files, sha256, inputs and outputs ({name, dtype, dims}; a dynamic axis is named), for text
models vocab_size, type_vocab_size, max_position_embeddings and max_sequence_length (the
longest input: RoBERTa numbers positions after its padding index, 514 embeddings for 512
tokens), hidden_size where the config has one, weights (only when the export drew them:
{"init": "random", "seed": N}), reference {producer, inputs, outputs}, export_check,
variants (file, sha256, max abs diff and cosine against PyTorch) and exporter (versions).

Reference inputs are the same on every platform: token ids from a fixed formula, two rows,
the second one padded (attention mask 0 on its last 5 tokens); images from a fixed integer
hash, two of them, pixel values k/64 in [-2, 2) (exact in float32). Each reference tensor of
manifest.json has dtype ("int64", "float32"), shape and data (flat, row-major).

Random weights (--checkpoint without weights, --torchvision) are the model's own
initialization after torch.manual_seed(--seed). A fresh network's batch norm is the
identity (running mean 0, variance 1), under which a random MobileNetV3's outputs fall to
1e-10; so a random image model's batch norm running statistics are taken from one pass over
8 fixed images (the first two are the reference inputs), which keeps activations at the
scale of a trained network's (recorded as weights.batch_norm).

Usage:
    python models/export.py --checkpoint DIR --out OUT [--name NAME] [--seed 0]
    python models/export.py --torchvision NAME --out OUT [--image-size 224] [--seed 0]
    python models/export.py --tiny-fixture OUT [--kind bert|cnn|vit] [--seed 0]
                            [--text-files-only]
  all of them: [--opset 17] [--static] [--variants fp32,fp16,int8]

Examples:
    python models/export.py --checkpoint ~/all-MiniLM-L6-v2 --out models/out/all-MiniLM-L6-v2
    python models/export.py --torchvision resnet18 --out models/out/resnet18
    python models/export.py --tiny-fixture models/fixtures/tiny-cnn --kind cnn

`--tiny-fixture` builds a small model with random weights (fixed seed) and exports it; the
committed test fixtures models/fixtures/tiny-* were made this way, and are reproduced byte
for byte, but for what PyTorch and ONNX Runtime compute in floating point in manifest.json
(reference outputs, accuracy figures: their last digits differ across CPUs). tiny-cnn and
tiny-vit draw their weights from numpy's PCG64 generator (uniform, exact arithmetic), the
same bits on every platform; tiny-bert from torch's normal_ (as it always has):

    --kind bert     tiny-bert: a 2-layer BERT (hidden 32, 4 heads, 128-token vocabulary,
                    64 positions), with model.safetensors and config.json
    --kind cnn      tiny-cnn: a ResNet-style CNN of torch and torchvision blocks (conv,
                    batch norm in eval mode with random running statistics, ReLU, max pool,
                    two torchvision BasicBlocks with their residual adds, adaptive average
                    pool to 1x1, flatten, linear); pixel_values [batch, 3, 32, 32] to logits
                    [batch, 10]; no checkpoint files
    --kind vit      tiny-vit: a transformers ViTModel (hidden 32, 2 layers, 2 heads,
                    intermediate 64, 32x32 images in 8x8 patches); pixel_values
                    [batch, 3, 32, 32] to last_hidden_state [batch, 17, 32]; with
                    model.safetensors and config.json

For tiny-bert it also writes the fixture's text side: a 128-token WordPiece tokenizer
(tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json),
sentence-transformers files like all-MiniLM-L6-v2's (modules.json, 1_Pooling/config.json,
sentence_bert_config.json; mean pooling, then L2 normalisation) and
embeddings_reference.json: fixed sentences, their token ids and their embeddings by ONNX
Runtime. With `--text-files-only` only these are (re)written, from the model.onnx already in
OUT.

Errors in what is asked (a missing folder, an unknown architecture, a decoder, an unknown
torchvision name, ...) are one line on stderr and exit status 2.
"""

import argparse
import difflib
import hashlib
import importlib
import inspect
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
warnings.filterwarnings("ignore", module=r"torchvision.*")
warnings.filterwarnings("ignore", module=r"onnxconverter_common.*")

MANIFEST_SCHEMA = 1
# The inputs a text encoder may take, in this order (BERT takes all three).
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
IMAGE_INPUT = "pixel_values"
OUTPUT_NAME = "last_hidden_state"
LOGITS_NAME = "logits"
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
# A checkpoint holds weights when it has one of these; else the export uses random ones.
WEIGHT_FILES = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
]
OTHER_FRAMEWORK_WEIGHTS = ["tf_model.h5", "flax_model.msgpack"]
# Reference inputs: two rows, the second one padded, so that masking is checked too.
REF_BATCH, REF_SEQ, REF_PAD = 2, 16, 5
# Random image models take their batch norm statistics from this many fixed images.
CALIBRATION_IMAGES = 8
DEFAULT_IMAGE_SIZE = 224
TINY_KINDS = {"bert": "tiny-bert", "cnn": "tiny-cnn", "vit": "tiny-vit"}
VARIANTS = ["fp32", "fp16", "int8"]
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
ENCODERS_HINT = (
    "this exporter takes encoders that transformers builds with AutoModel: text (bert, "
    "roberta, distilbert, ...) or images (vit, ...); torchvision classifiers with "
    "--torchvision"
)


class ExportError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def reference_inputs(vocab_size, type_vocab_size, seq=REF_SEQ, pad=REF_PAD):
    """Deterministic token ids inside the vocabulary (no RNG: identical on every platform)."""
    ids, mask, types = [], [], []
    for b in range(REF_BATCH):
        row_ids, row_mask, row_types = [], [], []
        for s in range(seq):
            row_ids.append((b * 7919 + s * 104729 + 101) % vocab_size)
            padded = b == REF_BATCH - 1 and s >= seq - pad
            row_mask.append(0 if padded else 1)
            row_types.append(1 if (type_vocab_size > 1 and s >= seq // 2) else 0)
        ids.append(row_ids)
        mask.append(row_mask)
        types.append(row_types)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def image_reference(batch, channels, height, width):
    """Deterministic images (an integer hash of each value's index; no RNG: identical on
    every platform): float32 [batch, channels, height, width], values k/64 in [-2, 2). The
    first images of a larger batch are the images of a smaller one."""
    import numpy as np

    i = np.arange(batch * channels * height * width, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0x5BD1E995)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    k = ((h >> np.uint64(8)) & np.uint64(255)).astype(np.int64) - 128
    return (k / 64.0).astype(np.float32).reshape(batch, channels, height, width)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_config(checkpoint):
    """The checkpoint's config, once config.json is known to name an architecture this
    transformers has."""
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    config_path = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(config_path):
        raise ExportError(
            f"{config_path} not found: --checkpoint must be a Hugging Face model folder "
            "(config.json plus model.safetensors or pytorch_model.bin)"
        )
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"{config_path} is not readable JSON: {first_line(e)}") from e
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if not model_type:
        raise ExportError(
            f"{config_path} has no model_type: set it to the model's Hugging Face "
            "architecture (bert, roberta, distilbert, vit, ...)"
        )
    if model_type not in CONFIG_MAPPING_NAMES:
        close = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING_NAMES), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ExportError(
            f"model_type '{model_type}' in {config_path} is not an architecture transformers "
            f"{transformers.__version__} knows{hint}: fix model_type in config.json, or use a "
            "transformers release that has this architecture (pinned in models/requirements.txt)"
        )
    try:
        return AutoConfig.from_pretrained(checkpoint)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ExportError(f"transformers cannot read {config_path}: {first_line(e)}") from e


def check_encoder(config, config_path):
    """Refuses what is not an encoder: decoders, encoder-decoders, models that take neither
    token ids nor images (or both)."""
    import transformers
    from transformers import MODEL_MAPPING
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = config.model_type
    where = f"model_type '{model_type}' in {config_path}"
    if getattr(config, "is_encoder_decoder", False):
        raise ExportError(f"{where} is an encoder-decoder model: {ENCODERS_HINT}")
    if (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        raise ExportError(f"{where} is a decoder (causal language model): {ENCODERS_HINT}")
    try:
        cls = MODEL_MAPPING[type(config)]
    except KeyError:
        raise ExportError(
            f"{where} has no AutoModel class in transformers {transformers.__version__}: "
            f"{ENCODERS_HINT}"
        ) from None
    if isinstance(cls, (tuple, list)):
        cls = cls[0]
    params = inspect.signature(cls.forward).parameters
    text, image = "input_ids" in params, IMAGE_INPUT in params
    if text == image:
        takes = "both input_ids and pixel_values" if text else "neither input_ids nor pixel_values"
        raise ExportError(f"{where} ({cls.__name__}) takes {takes}: {ENCODERS_HINT}")


def has_weights(checkpoint):
    return any(os.path.isfile(os.path.join(checkpoint, f)) for f in WEIGHT_FILES)


def load_checkpoint(checkpoint, seed=0):
    """(config, model in eval mode): the checkpoint's weights, or random ones after
    torch.manual_seed(seed) when the folder has none."""
    import torch
    from transformers import AutoModel

    config = read_config(checkpoint)
    config_path = os.path.join(checkpoint, "config.json")
    check_encoder(config, config_path)
    try:
        if has_weights(checkpoint):
            model = AutoModel.from_pretrained(
                checkpoint, attn_implementation="eager", dtype=torch.float32
            )
        else:
            for other in OTHER_FRAMEWORK_WEIGHTS:
                if os.path.isfile(os.path.join(checkpoint, other)):
                    raise ExportError(
                        f"{checkpoint} has {other} only: the export loads PyTorch weights "
                        "(model.safetensors or pytorch_model.bin)"
                    )
            torch.manual_seed(seed)
            model = AutoModel.from_config(
                config, attn_implementation="eager", dtype=torch.float32
            )
    except (OSError, ValueError) as e:
        raise ExportError(
            f"transformers cannot build the model of {checkpoint}: {first_line(e)}"
        ) from e
    model.eval()
    return config, model


def model_inputs(config, model):
    """The inputs of the export, from the model's forward signature and its config:
    pixel_values for image encoders; input_ids, attention_mask and, when the model has more
    than one token type, token_type_ids for text encoders."""
    params = inspect.signature(model.forward).parameters
    if IMAGE_INPUT in params:
        return [IMAGE_INPUT]
    names = ["input_ids"]
    if "attention_mask" in params:
        names.append("attention_mask")
    if "token_type_ids" in params and getattr(config, "type_vocab_size", 2) > 1:
        names.append("token_type_ids")
    return names


def encoder_module(model, input_names=None):
    """Wraps the model so torch.onnx.export sees positional inputs and one output,
    last_hidden_state. The inputs are model_inputs' unless given."""
    import torch

    if input_names is None:
        input_names = model_inputs(model.config, model)

    class Encoder(torch.nn.Module):
        def __init__(self, inner, names):
            super().__init__()
            self.inner = inner
            self.names = list(names)

        def forward(self, *inputs):
            # transformers 5 takes keyword arguments only.
            out = self.inner(**dict(zip(self.names, inputs)))
            return out.last_hidden_state

    return Encoder(model, input_names).eval()


def max_sequence_length(config, model):
    """The longest sequence the model takes: max_position_embeddings, less the offset of
    models that number positions after the padding index (RoBERTa: 514 - 2 = 512). None
    for models without position embeddings."""
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    embeddings = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
    pad = getattr(embeddings, "padding_idx", None)
    return n - pad - 1 if pad is not None else n


def image_size_of(config):
    size = getattr(config, "image_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise ExportError(
        f"config.json of model_type '{config.model_type}' has no image_size (an int or "
        "[height, width]): the export needs fixed image dimensions"
    )


def calibrate_batch_norm(model, images):
    """Sets each batch norm's running statistics to those of one pass over `images`, the
    rest of the model in eval mode. Returns whether the model has batch norm."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    model.eval()
    saved = []
    for m in norms:
        saved.append(m.momentum)
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: the statistics of this one batch
        m.train()
    try:
        with torch.no_grad():
            model(torch.from_numpy(images))
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()
    return True


def export(checkpoint, out, opset=17, dynamic=True, name=None, variants=None, seed=0):
    """Exports the Hugging Face model of folder `checkpoint` to folder `out`."""
    import torch

    config, model = load_checkpoint(checkpoint, seed)
    random_weights = not has_weights(checkpoint)
    if random_weights:
        print(
            f"export.py: {checkpoint} has no weights: random weights (seed {seed})",
            file=sys.stderr,
        )
    names = model_inputs(config, model)
    fields = {}
    weights = {"init": "random", "seed": seed} if random_weights else None
    if names == [IMAGE_INPUT]:
        height, width = image_size_of(config)
        channels = getattr(config, "num_channels", 3)
        images = image_reference(CALIBRATION_IMAGES, channels, height, width)
        if random_weights and calibrate_batch_norm(model, images):
            weights["batch_norm"] = f"running statistics of {CALIBRATION_IMAGES} fixed images"
        ref = {IMAGE_INPUT: images[:REF_BATCH]}
    else:
        import numpy as np

        type_vocab_size = getattr(config, "type_vocab_size", 1) if "token_type_ids" in names else 1
        longest = max_sequence_length(config, model)
        seq = REF_SEQ if longest is None else min(REF_SEQ, longest)
        lists = reference_inputs(config.vocab_size, type_vocab_size, seq, min(REF_PAD, seq - 1))
        ref = {n: np.array(lists[n], dtype=np.int64) for n in names}
        fields = {
            "vocab_size": config.vocab_size,
            "type_vocab_size": type_vocab_size,
            "max_position_embeddings": getattr(config, "max_position_embeddings", None),
            "max_sequence_length": longest,
        }
    if getattr(config, "hidden_size", None) is not None:
        fields["hidden_size"] = config.hidden_size
    os.makedirs(out, exist_ok=True)

    # The weights candle reads: the checkpoint's own file when it has one, else a fresh dump.
    st_src = os.path.join(checkpoint, "model.safetensors")
    st_dst = os.path.join(out, "model.safetensors")
    if os.path.isfile(st_src):
        if os.path.abspath(st_src) != os.path.abspath(st_dst):
            shutil.copyfile(st_src, st_dst)
    else:
        from safetensors.torch import save_file

        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(state, st_dst)
    for rel in SIDE_FILES:
        src = os.path.join(checkpoint, rel)
        if os.path.isfile(src):
            dst = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.abspath(src) != os.path.abspath(dst):
                shutil.copyfile(src, dst)

    with torch.no_grad():
        return export_module(
            encoder_module(model, names),
            ref,
            OUTPUT_NAME,
            out,
            name=name or os.path.basename(os.path.normpath(checkpoint)),
            model_type=config.model_type,
            opset=opset,
            dynamic=dynamic,
            variants=variants,
            files={
                "onnx": "model.onnx",
                "safetensors": "model.safetensors",
                "config": "config.json",
            },
            fields=fields,
            weights=weights,
        )


def load_torchvision(name, seed):
    """torchvision's classification model `name`, random weights after
    torch.manual_seed(seed)."""
    import torch
    import torchvision

    classifiers = torchvision.models.list_models(module=torchvision.models)
    if name not in classifiers:
        if name in torchvision.models.list_models():
            family = torchvision.models.get_model_builder(name).__module__.split(".")[2]
            raise ExportError(
                f"torchvision model '{name}' is a {family} model (torchvision.models.{family}): "
                "--torchvision takes image classification models, e.g. resnet18, "
                "mobilenet_v3_small"
            )
        close = difflib.get_close_matches(name, classifiers, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ExportError(
            f"unknown torchvision model '{name}'{hint}: --torchvision takes the name of one of "
            f"the {len(classifiers)} image classification models of torchvision "
            f"{torchvision.__version__}, e.g. resnet18, resnet50, mobilenet_v3_small, "
            "efficientnet_b0 (all: torchvision.models.list_models(module=torchvision.models))"
        )
    torch.manual_seed(seed)
    return torchvision.models.get_model(name, weights=None).eval()


def export_torchvision(name, out, image_size=DEFAULT_IMAGE_SIZE, opset=17, dynamic=True,
                       out_name=None, variants=None, seed=0):
    """Exports torchvision's classification model `name`, random weights, for
    image_size x image_size images."""
    import torch

    model = load_torchvision(name, seed)
    images = image_reference(CALIBRATION_IMAGES, 3, image_size, image_size)
    weights = {"init": "random", "seed": seed}
    try:
        if calibrate_batch_norm(model, images):
            weights["batch_norm"] = f"running statistics of {CALIBRATION_IMAGES} fixed images"
        with torch.no_grad():
            out_tensor = model(torch.from_numpy(images[:REF_BATCH]))
    except (RuntimeError, ValueError, AssertionError) as e:
        raise ExportError(
            f"torchvision {name} does not run on 3x{image_size}x{image_size} images: "
            f"{first_line(e)} (try another --image-size)"
        ) from e
    if not isinstance(out_tensor, torch.Tensor) or out_tensor.dim() != 2:
        raise ExportError(f"torchvision {name} does not return logits [batch, classes]")
    os.makedirs(out, exist_ok=True)
    with torch.no_grad():
        return export_module(
            model,
            {IMAGE_INPUT: images[:REF_BATCH]},
            LOGITS_NAME,
            out,
            name=out_name or name,
            model_type=f"torchvision:{name}",
            opset=opset,
            dynamic=dynamic,
            variants=variants,
            files={"onnx": "model.onnx"},
            fields={},
            weights=weights,
            extra_versions=["torchvision"],
        )


def export_module(module, ref, output_name, out, *, name, model_type, opset, dynamic,
                  variants, files, fields, weights=None, extra_versions=()):
    """Exports `module` (positional inputs in the order of `ref`, one output tensor) to
    out/model.onnx, checks it against PyTorch in ONNX Runtime, writes the variants and
    manifest.json. `ref` maps input names to numpy arrays: the reference inputs."""
    import numpy as np
    import torch

    names = list(ref)
    text = names != [IMAGE_INPUT]
    tensors = tuple(torch.from_numpy(ref[n]) for n in names)
    with torch.no_grad():
        torch_out = module(*tensors).numpy().astype(np.float32)

    # Dynamic: the batch axis, and the sequence axis of text models.
    dyn = {0: "batch", 1: "sequence"} if text else {0: "batch"}

    def dims(shape):
        return [dyn.get(i, d) if dynamic else d for i, d in enumerate(shape)]

    onnx_path = os.path.join(out, "model.onnx")
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {n: dict(dyn) for n in names}
        dynamic_axes[output_name] = dict(dyn)
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                tensors,
                onnx_path,
                input_names=names,
                output_names=[output_name],
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as e:  # torch.onnx raises several types, with the reason in the text
        raise ExportError(
            f"torch.onnx.export (TorchScript-based, opset {opset}) cannot export {model_type}: "
            f"{first_line(e)}"
        ) from e

    ort_check = check_with_onnxruntime(onnx_path, ref, torch_out, output_name)
    variant_info = {}
    for v in variants or VARIANTS:
        path = os.path.join(out, VARIANT_FILES[v])
        if v == "fp16":
            write_fp16(onnx_path, path)
        elif v == "int8":
            write_int8(onnx_path, path)
        variant_info[v] = dict(
            file=VARIANT_FILES[v],
            sha256=sha256(path),
            **accuracy(path, ref, torch_out, output_name),
        )
    digests = {"model.onnx": sha256(onnx_path)}
    if "safetensors" in files:
        digests[files["safetensors"]] = sha256(os.path.join(out, files["safetensors"]))
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "name": name,
        "model_type": model_type,
        "opset": opset,
        "files": files,
        "sha256": digests,
        "inputs": [
            {"name": n, "dtype": str(ref[n].dtype), "dims": dims(ref[n].shape)} for n in names
        ],
        "outputs": [{"name": output_name, "dtype": "float32", "dims": dims(torch_out.shape)}],
        **fields,
    }
    if weights:
        manifest["weights"] = weights
    manifest["reference"] = {
        "producer": f"torch {torch.__version__} eager, float32",
        "inputs": {n: reference_tensor(ref[n]) for n in names},
        "outputs": {output_name: reference_tensor(torch_out)},
    }
    manifest["export_check"] = ort_check
    manifest["variants"] = variant_info
    manifest["exporter"] = versions(extra_versions)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest


def reference_tensor(a):
    """A reference tensor of manifest.json: dtype, shape, data (flat, row-major)."""
    if a.dtype.kind == "f":
        data = [float(x) for x in a.reshape(-1)]
    else:
        data = [int(x) for x in a.reshape(-1)]
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": data}


def check_with_onnxruntime(onnx_path, ref, torch_out, output_name=OUTPUT_NAME):
    """Runs the exported graph in ONNX Runtime on the reference inputs; the export is
    refused when it does not reproduce PyTorch: max abs diff over 1e-4, times the largest
    output magnitude when that is over 1."""
    import numpy as np
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        (got,) = sess.run([output_name], dict(ref))
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime cannot run {onnx_path}: {first_line(e)}") from e
    max_abs = float(np.max(np.abs(got - torch_out)))
    bound = 1e-4 * max(1.0, float(np.max(np.abs(torch_out))))
    if not max_abs <= bound:
        raise ExportError(
            f"exported graph disagrees with PyTorch: max abs diff {max_abs:.3g} > {bound:.3g}"
        )
    return {"onnxruntime": ort.__version__, "max_abs_diff_vs_torch": max_abs}


def write_fp16(src, dst):
    """float16 weights and compute; inputs and outputs stay float32 (keep_io_types)."""
    import onnx
    from onnxconverter_common import float16

    model = drop_float_to_float_casts(onnx.load(src))
    model = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, dst)


def drop_float_to_float_casts(model):
    """Removes the Cast-to-float32 nodes whose input is float32 already (transformers'
    `softmax(..., dtype=float32).to(dtype)`, ViT's attention). They do nothing in float32,
    and onnxconverter-common's float16 pass leaves them casting to float32 while it declares
    their outputs float16: a graph ONNX Runtime refuses to load."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    graph_outputs = {o.name for o in model.graph.output}
    renamed, kept = {}, []
    for node in model.graph.node:  # in topological order, as exported
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if (
            node.op_type == "Cast"
            and to == TensorProto.FLOAT
            and types.get(node.input[0]) == TensorProto.FLOAT
            and node.output[0] not in graph_outputs
        ):
            renamed[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    if renamed:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        infos = [v for v in model.graph.value_info if v.name not in renamed]
        del model.graph.value_info[:]
        model.graph.value_info.extend(infos)
    return model


def write_int8(src, dst):
    """Dynamic quantization: int8 weights per output channel, activations quantized at run
    time. Per-tensor int8 loses too much on BERT (pooled cosine about 0.89 on MiniLM)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)


def accuracy(path, ref, torch_out, output_name=OUTPUT_NAME):
    """A variant's outputs on the reference inputs in ONNX Runtime, against PyTorch fp32.
    A variant ONNX Runtime cannot load or run is an export error."""
    import numpy as np
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (got,) = sess.run([output_name], dict(ref))
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime cannot run {path}: {e}") from e
    a = got.astype(np.float64).reshape(-1)
    b = torch_out.astype(np.float64).reshape(-1)
    return {
        "max_abs_diff_vs_torch": float(np.max(np.abs(a - b))),
        "cosine_vs_torch": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
    }


def versions(extra=()):
    import onnx
    import torch
    import transformers

    found = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
    }
    for package in extra:
        found[package] = importlib.import_module(package).__version__
    return found


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


def make_tiny_vit_checkpoint(folder, seed):
    """A 2-layer ViT (hidden size 32, 2 heads, 32x32 images in 8x8 patches) with random
    weights spread as tiny-bert's, drawn by fill_uniform."""
    import numpy as np
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_act="gelu",
    )
    model = ViTModel(config, add_pooling_layer=False)
    rng = np.random.default_rng(seed)
    # Standard deviations 0.2 (matrices) and 0.1 (vectors), as tiny-bert's normal draws.
    for name, p in model.named_parameters():
        if p.dim() > 1:
            fill_uniform(p, rng, 0.2 * 3**0.5)
        elif "layernorm" in name and name.endswith(".weight"):
            fill_uniform(p, rng, 0.5, 1.5)
        else:
            fill_uniform(p, rng, 0.1 * 3**0.5)
    model.save_pretrained(folder, safe_serialization=True)


def fill_uniform(tensor, rng, a, b=None):
    """Fills `tensor` with float32 draws, uniform in [a, b) (in [-a, a) without b), of the
    numpy Generator `rng`: PCG64's integers scaled by exact arithmetic, the same bits on
    every platform (torch's normal_ draws differ between its scalar, AVX2 and ARM kernels)."""
    import torch

    low, high = (-a, a) if b is None else (a, b)
    draws = rng.uniform(low, high, size=tuple(tensor.shape)).astype("float32")
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(draws))


def tiny_cnn(seed):
    """A small ResNet-style CNN of torch and torchvision blocks, in eval mode:
    pixel_values [batch, 3, 32, 32] to logits [batch, 10]. Random weights drawn by
    fill_uniform (numpy Generator of `seed`): He-scaled convolutions, batch norm with random
    affine parameters and running statistics, so that it is not the identity (the export
    folds it into the convolutions)."""
    from collections import OrderedDict

    import numpy as np
    from torch import nn
    from torchvision.models.resnet import BasicBlock, conv1x1

    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False),
            bn1=nn.BatchNorm2d(16),
            relu=nn.ReLU(inplace=True),
            maxpool=nn.MaxPool2d(kernel_size=2),  # 32x32 -> 16x16
            layer1=BasicBlock(16, 16),  # residual add
            layer2=BasicBlock(  # -> 8x8, residual add through a 1x1 convolution
                16, 32, stride=2, downsample=nn.Sequential(conv1x1(16, 32, 2), nn.BatchNorm2d(32))
            ),
            avgpool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(32, 10),
        )
    )
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fill_uniform(m.weight, rng, (6.0 / m.weight[0].numel()) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            fill_uniform(m.weight, rng, 0.5, 1.5)
            fill_uniform(m.bias, rng, 0.2)
            fill_uniform(m.running_mean, rng, 0.2)
            fill_uniform(m.running_var, rng, 0.5, 1.5)
        elif isinstance(m, nn.Linear):
            fill_uniform(m.weight, rng, (3.0 / m.weight.shape[1]) ** 0.5)
            fill_uniform(m.bias, rng, 0.2)
    return model.eval()


def export_tiny_cnn(out, opset=17, dynamic=True, name=None, variants=None, seed=0):
    import torch

    os.makedirs(out, exist_ok=True)
    with torch.no_grad():
        return export_module(
            tiny_cnn(seed),
            {IMAGE_INPUT: image_reference(REF_BATCH, 3, 32, 32)},
            LOGITS_NAME,
            out,
            name=name or TINY_KINDS["cnn"],
            model_type="tiny-cnn",
            opset=opset,
            dynamic=dynamic,
            variants=variants,
            files={"onnx": "model.onnx"},
            fields={},
            weights={"init": "random", "seed": seed},
            extra_versions=["torchvision"],
        )


def export_tiny(kind, out, opset=17, dynamic=True, name=None, variants=None, seed=0):
    """Builds and exports the tiny test model of `kind` (bert, cnn, vit) to `out`."""
    if kind == "cnn":
        return export_tiny_cnn(out, opset, dynamic, name, variants, seed)
    make = {"bert": make_tiny_checkpoint, "vit": make_tiny_vit_checkpoint}[kind]
    with tempfile.TemporaryDirectory() as tmp:
        make(tmp, seed)
        m = export(tmp, out, opset, dynamic, name or TINY_KINDS[kind], variants)
    if kind == "bert":
        write_tiny_text_files(out)
    return m


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
    src.add_argument(
        "--checkpoint",
        help="local Hugging Face model folder of an encoder (BERT, RoBERTa, DistilBERT, ViT, "
        "...); random weights when it has config.json only",
    )
    src.add_argument(
        "--torchvision",
        metavar="NAME",
        help="torchvision image classification model, random weights (resnet18, "
        "mobilenet_v3_small, ...)",
    )
    src.add_argument(
        "--tiny-fixture", metavar="OUT", help="build and export a tiny test model (--kind)"
    )
    p.add_argument("--out", help="output folder (with --checkpoint and --torchvision)")
    p.add_argument("--name", help="model name recorded in the manifest")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static", action="store_true", help="fixed batch (and sequence) axes")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of random weights (--tiny-fixture, --torchvision, checkpoints without weights)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        metavar="N",
        help=f"with --torchvision: N x N images (default {DEFAULT_IMAGE_SIZE})",
    )
    p.add_argument(
        "--kind",
        choices=sorted(TINY_KINDS),
        help="with --tiny-fixture: bert (tiny-bert, the default), cnn (tiny-cnn) or vit "
        "(tiny-vit)",
    )
    p.add_argument(
        "--text-files-only",
        action="store_true",
        help="with --tiny-fixture (bert): only (re)write the tokenizer, sentence-transformers "
        "and embeddings_reference.json files, from the model.onnx already in OUT",
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
        if a.kind and not a.tiny_fixture:
            raise ExportError("--kind goes with --tiny-fixture")
        if a.image_size is not None and not a.torchvision:
            raise ExportError(
                "--image-size goes with --torchvision (Hugging Face image models take "
                "config.json's image_size)"
            )
        kind = a.kind or "bert"
        if a.text_files_only:
            if not a.tiny_fixture or kind != "bert":
                raise ExportError("--text-files-only goes with --tiny-fixture (--kind bert)")
            if not os.path.isfile(os.path.join(a.tiny_fixture, "model.onnx")):
                raise ExportError(
                    f"{a.tiny_fixture}/model.onnx not found: export the fixture first"
                )
            write_tiny_text_files(a.tiny_fixture)
            print(f"wrote {', '.join(TEXT_FILES)} to {a.tiny_fixture}", file=sys.stderr)
            return 0
        if a.tiny_fixture:
            out = a.tiny_fixture
            m = export_tiny(kind, out, a.opset, not a.static, a.name, variants, a.seed)
        else:
            if not a.out:
                source = "--checkpoint" if a.checkpoint else "--torchvision"
                raise ExportError(f"--out is required with {source}")
            out = a.out
            if a.torchvision:
                size = DEFAULT_IMAGE_SIZE if a.image_size is None else a.image_size
                if size < 1:
                    raise ExportError(f"--image-size must be positive, not {size}")
                m = export_torchvision(
                    a.torchvision, out, size, a.opset, not a.static, a.name, variants, a.seed
                )
            else:
                if not os.path.isdir(a.checkpoint):
                    raise ExportError(f"checkpoint folder {a.checkpoint} does not exist")
                m = export(a.checkpoint, out, a.opset, not a.static, a.name, variants, a.seed)
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
