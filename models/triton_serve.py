#!/usr/bin/env python3
"""Serve an exported model folder through NVIDIA Triton (PyTriton), the Triton baseline.

PyTriton (PyPI nvidia-pytriton 0.7.0, in .venv-triton made by `scripts/setup.sh triton`) runs
the bundled tritonserver 2.51 with its Python backend; the inference function runs the folder's
model.onnx in ONNX Runtime (Python, CPU), one InferenceSession per model instance. Triton serves
KServe v2 over HTTP and gRPC and Prometheus metrics, all bound to 127.0.0.1. Any interpreter
may start the script: it runs itself under .venv-triton's.

Inputs and outputs, with their dtypes, come from the ONNX graph. They are declared to Triton
without the batch dimension (the graph's first axis), with max_batch_size = --max-batch.
--max-queue-delay-us 0 leaves Triton's dynamic batcher off (every request is run on its own);
above 0 the dynamic batcher gathers requests for up to that many microseconds. Requests run
together are concatenated along the batch axis when their other dimensions agree.

Once the model is ready the script prints one line on stdout,

    ready http=PORT grpc=PORT metrics=PORT model=NAME

and nothing else: Triton's own log goes to stderr. It stops Triton and exits 0 on SIGTERM or
SIGINT, or by itself --shutdown-after seconds after it started.

Usage:
    python models/triton_serve.py --model DIR [--name NAME] [--http-port 8000]
        [--grpc-port 8001] [--metrics-port 8002] [--max-batch 32] [--max-queue-delay-us 0]
        [--threads N] [--instances 1] [--shutdown-after SECONDS]
"""

import argparse
import os
import signal
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"
READY_TIMEOUT_S = 120.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRITON_VENV = os.path.join(ROOT, ".venv-triton")


def ensure_triton_environment():
    """PyTriton 0.7.0 needs numpy<2 (under numpy 2 its Python backend stub returns empty
    output tensors), so it has an environment of its own, .venv-triton, made by
    `scripts/setup.sh triton`; the backend stub runs in the environment of the interpreter
    that started Triton. Started by any other interpreter (the harness's .venv, say), the
    script starts itself again under .venv-triton's."""
    import importlib.metadata
    import importlib.util

    try:
        numpy_major = int(importlib.metadata.version("numpy").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        numpy_major = None
    if importlib.util.find_spec("pytriton") is not None and numpy_major == 1:
        return
    python = os.path.join(TRITON_VENV, "bin", "python")
    if os.access(python, os.X_OK) and os.path.realpath(sys.prefix) != os.path.realpath(TRITON_VENV):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])
    raise SystemExit(
        "triton_serve.py: PyTriton with numpy<2 is not installed for this interpreter; "
        "run scripts/setup.sh triton (it makes .venv-triton)"
    )


def ensure_libpython_on_library_path():
    """Triton's Python backend stub loads libpython at run time. Unless the interpreter's own
    library folder comes first on LD_LIBRARY_PATH, the stub can bind another build of
    libpython (a pyenv or venv interpreter next to the system one) and the model fails to load
    (`'_thread.RLock' object has no attribute '_recursion_count'`). The dynamic loader reads
    LD_LIBRARY_PATH only at process start, so the script starts itself again with it set."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not os.path.isdir(libdir):
        return
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir in current.split(os.pathsep):
        return
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = libdir + (os.pathsep + current if current else "")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="exported model folder (holds model.onnx)")
    p.add_argument("--name", help="model name in Triton (default: the folder's name)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--max-batch", type=int, default=32, help="Triton max_batch_size")
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=0,
        help="dynamic batcher max_queue_delay_microseconds; 0 turns the dynamic batcher off",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime intra-op threads per instance (0: ONNX Runtime's default)",
    )
    p.add_argument("--instances", type=int, default=1, help="model instances (sessions)")
    p.add_argument(
        "--shutdown-after",
        type=float,
        metavar="SECONDS",
        help="stop by itself this many seconds after starting",
    )
    a = p.parse_args(argv)
    if a.max_batch < 1:
        p.error("--max-batch must be at least 1")
    if a.max_queue_delay_us < 0:
        p.error("--max-queue-delay-us must not be negative")
    if a.threads < 0:
        p.error("--threads must not be negative")
    if a.instances < 1:
        p.error("--instances must be at least 1")
    if a.shutdown_after is not None and a.shutdown_after <= 0:
        p.error("--shutdown-after must be positive")
    onnx_path = os.path.join(a.model, "model.onnx")
    if not os.path.isfile(onnx_path):
        p.error(f"{onnx_path} not found: --model must be a folder made by models/export.py")
    a.name = a.name or os.path.basename(os.path.normpath(os.path.abspath(a.model)))
    return a


# ONNX element types (as ONNX Runtime spells them) and the numpy dtypes Triton is told.
ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def new_session(onnx_path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])


def tensor_specs(session):
    """(inputs, outputs) as (name, numpy dtype, shape without the batch axis) from the graph.
    The first axis of every tensor must be dynamic: it is the axis Triton batches on."""
    import numpy as np

    def specs(args, kind):
        out = []
        for arg in args:
            if arg.type not in ONNX_DTYPES:
                raise SystemExit(
                    f"triton_serve.py: {kind} {arg.name} has type {arg.type}, not served"
                )
            shape = list(arg.shape or [])
            if not shape or isinstance(shape[0], int):
                raise SystemExit(
                    f"triton_serve.py: {kind} {arg.name} has shape {shape}: the first axis must be "
                    "a dynamic batch axis (export without --static)"
                )
            dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape[1:])
            out.append((arg.name, np.dtype(ONNX_DTYPES[arg.type]), dims))
        return out

    return specs(session.get_inputs(), "input"), specs(session.get_outputs(), "output")


def make_infer_func(session, input_names, output_names):
    """An inference callable for one model instance. Triton hands it the requests it runs
    together; those whose inputs have equal shapes are concatenated and run as one batch."""
    import numpy as np

    def infer(requests):
        responses = [None] * len(requests)
        groups = {}
        for i, req in enumerate(requests):
            key = tuple((n, req[n].shape[1:]) for n in input_names)
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            feeds = {
                n: np.ascontiguousarray(np.concatenate([requests[i][n] for i in members]))
                for n in input_names
            }
            results = session.run(output_names, feeds)
            start = 0
            for i in members:
                rows = requests[i][input_names[0]].shape[0]
                responses[i] = {
                    n: r[start : start + rows] for n, r in zip(output_names, results)
                }
                start += rows
        return responses

    return infer


def check_ports_free(ports):
    """Fails early on a port in use: tritonserver would exit, and PyTriton's clean-up would then
    talk to whatever server holds the port."""
    import socket

    if len(set(ports)) != len(ports):
        raise SystemExit(f"triton_serve.py: the HTTP, gRPC and metrics ports must differ: {ports}")
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError as e:
                raise SystemExit(f"triton_serve.py: port {port} on {HOST} is in use ({e.strerror})")


def wait_model_ready(url, deadline, alive):
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


class Interrupted(KeyboardInterrupt):
    """A second SIGTERM or SIGINT while Triton is starting. A KeyboardInterrupt, so that the
    gevent hub inside tritonclient passes it on rather than printing and dropping it."""


def main(argv=None):
    a = parse_args(argv)
    ensure_triton_environment()
    ensure_libpython_on_library_path()
    check_ports_free([a.http_port, a.grpc_port, a.metrics_port])
    started = time.monotonic()
    deadline = started + a.shutdown_after if a.shutdown_after is not None else None

    # stdout carries only the ready line: everything else printed (PyTriton echoes
    # tritonserver's log with print) goes to stderr.
    ready_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    sys.stdout = sys.stderr

    stop = threading.Event()
    serving = False

    def on_signal(signum, _frame):
        # While Triton starts, the first signal lets the start finish (a few seconds) and then
        # stops it cleanly; a second one abandons the start.
        if stop.is_set() and not serving:
            raise Interrupted(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import (
        DEFAULT_PROTECTED_ENDPOINTS,
        Triton,
        TritonConfig,
        TritonSecurityConfig,
    )

    onnx_path = os.path.join(a.model, "model.onnx")
    sessions = [new_session(onnx_path, a.threads) for _ in range(a.instances)]
    inputs, outputs = tensor_specs(sessions[0])
    input_names = [n for n, _, _ in inputs]
    output_names = [n for n, _, _ in outputs]
    infer_funcs = [make_infer_func(s, input_names, output_names) for s in sessions]

    batcher = None
    if a.max_queue_delay_us > 0:
        batcher = DynamicBatcher(max_queue_delay_microseconds=a.max_queue_delay_us)
    model_config = ModelConfig(batching=True, max_batch_size=a.max_batch, batcher=batcher)
    triton_config = TritonConfig(
        http_address=HOST,
        http_port=a.http_port,
        grpc_address=HOST,
        grpc_port=a.grpc_port,
        metrics_address=HOST,
        metrics_port=a.metrics_port,
        allow_metrics=True,
        allow_gpu_metrics=False,
        exit_on_error=True,
    )
    # PyTriton puts a generated token on these endpoints; statistics stay open (loopback only)
    # so that a benchmark can read Triton's queue and compute times.
    security = TritonSecurityConfig(
        restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
    )

    triton = Triton(config=triton_config, security_config=security)
    code = 0
    try:
        triton.bind(
            model_name=a.name,
            infer_func=infer_funcs,
            inputs=[Tensor(name=n, dtype=d, shape=s) for n, d, s in inputs],
            outputs=[Tensor(name=n, dtype=d, shape=s) for n, d, s in outputs],
            config=model_config,
            strict=False,
        )
        triton.run()
        ready_url = f"http://{HOST}:{a.http_port}/v2/models/{a.name}/ready"
        limit = time.monotonic() + READY_TIMEOUT_S
        if deadline is not None:
            limit = min(limit, deadline)
        if not wait_model_ready(ready_url, limit, triton.is_alive):
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            print(f"triton_serve.py: model {a.name} did not become ready", file=sys.stderr)
            return 1
        serving = True
        if stop.is_set():
            return 0
        print(
            f"ready http={a.http_port} grpc={a.grpc_port} metrics={a.metrics_port} model={a.name}",
            file=ready_out,
            flush=True,
        )
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not triton.is_alive():
                print("triton_serve.py: Triton stopped unexpectedly", file=sys.stderr)
                code = 1
                break
            stop.wait(0.2)
    except Interrupted:
        pass
    except Exception as e:  # PyTriton and tritonclient raise their own exception types
        print(f"triton_serve.py: Triton failed: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    finally:
        serving = True  # a second signal while stopping must not interrupt the clean-up
        try:
            triton.stop()
        except Exception as e:
            print(f"triton_serve.py: stopping Triton: {type(e).__name__}: {e}", file=sys.stderr)
            code = code or 1
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Interrupted:
        sys.exit(0)
