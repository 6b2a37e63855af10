"""DeepSparse's side of bench/vs_deepsparse.py, run by the DeepSparse venv's Python.

Imports neither torch nor pruneflow (the venv has neither). Reads one JSON request per line on
stdin and answers one JSON line per request on the stdout it started with; DeepSparse's own
logging goes to stderr. Requests:

  {"op": "hello"}                                   -> deepsparse version and CPU info
  {"op": "compile", "onnx": P, "batch": B, "threads": N}  -> {"engine": id}
  {"op": "run", "engine": id, "input": X.npy, "output": Y.npy}   -> {} (Y written)
  {"op": "time", "engine": id, "input": X.npy, "warmup": W, "repeats": R}
                                                    -> {"ms": [wall ms of each run]}
  {"op": "close", "engine": id}

A failure answers {"error": "one line"}; the worker stays up.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything DeepSparse prints must not mix with the answers
    engines: dict[int, object] = {}
    inputs: dict[str, object] = {}

    import numpy as np

    def batch_of(path: str):
        if path not in inputs:
            inputs[path] = np.ascontiguousarray(np.load(path), dtype=np.float32)
        return inputs[path]

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            op = req["op"]
            if op == "hello":
                import deepsparse
                from deepsparse.cpu import cpu_architecture

                arch = dict(cpu_architecture())
                answer = {
                    "deepsparse": deepsparse.__version__,
                    "isa": arch.get("isa"),
                    "cpu": arch.get("vendor_model"),
                    "cores": arch.get("available_num_cores"),
                }
            elif op == "compile":
                from deepsparse import compile_model

                engine = compile_model(
                    req["onnx"], batch_size=int(req["batch"]), num_cores=int(req["threads"])
                )
                engines[id(engine)] = engine
                answer = {"engine": id(engine)}
            elif op == "run":
                out = engines[req["engine"]]([batch_of(req["input"])])[0]
                np.save(req["output"], np.asarray(out, dtype=np.float32))
                answer = {}
            elif op == "time":
                engine, x = engines[req["engine"]], [batch_of(req["input"])]
                for _ in range(int(req["warmup"])):
                    engine(x)
                ms = []
                for _ in range(int(req["repeats"])):
                    t0 = time.perf_counter_ns()
                    engine(x)
                    ms.append((time.perf_counter_ns() - t0) / 1e6)
                answer = {"ms": ms}
            elif op == "close":
                engines.pop(req["engine"], None)
                answer = {}
            else:
                answer = {"error": f"unknown request '{op}'"}
        except Exception as exc:  # noqa: BLE001 - every failure goes back as one line
            traceback.print_exc(file=sys.stderr)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            answer = {"error": f"{type(exc).__name__}: {first}"}
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
