"""Single-thread LiteRT latency of exported ``.tflite`` files, nothing else (no JAX, no data).

    .venv/bin/python tools/bench_tflite_latency.py MODEL.tflite [MODEL.tflite ...]

Each model is fed the same random inputs (normal, scale 0.3, the model's own input shapes;
float latency does not depend on the values) 20 times to warm up, then timed over 300 calls
through :class:`mmar.export.runtime.TFLiteModel` (``num_threads=1``, Python call overhead
included). Prints median and p99 per file. Use it on an idle machine for latency figures;
``tools/bench_export.py`` also measures accuracy but takes an hour on the test split.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(paths):
    import time

    import numpy as np

    from mmar.export.runtime import TFLiteModel

    rng = np.random.default_rng(0)
    for path in paths:
        m = TFLiteModel(path)
        feed = {n: rng.normal(scale=0.3, size=m.input_details[n][0]).astype(np.float32) for n in m.input_names}
        for _ in range(20):
            m(feed)
        ts = np.empty(300)
        for i in range(len(ts)):
            t0 = time.perf_counter()
            m(feed)
            ts[i] = (time.perf_counter() - t0) * 1e3
        print(f"{path}: median {np.median(ts):.3f} ms, p99 {np.percentile(ts, 99):.3f} ms")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
