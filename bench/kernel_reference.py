#!/usr/bin/python3
"""Time the original method's preprocess and roi on raw volumes written by the kernel benchmarks.

Runs the reference implementation's `preprocess` and `roi_mask` (scikit-image 0.19.3,
Pillow 9.4.0, numpy 1.24 as Debian bookworm ships them) on one core, and writes each
output as little-endian uint8 so the benchmark can compare it with the product's.
Usage: kernel_reference.py REFERENCE_DIR JOB.json
  REFERENCE_DIR holds seed_reference.py.
  JOB.json: {"tasks": [{"kind": "preprocess" | "roi", "input": RAW, "dims": [x, y, z],
             "dtype": "uint8" | "uint16", "vendor": V, "template": RAW | null,
             "templateDims": [x, y, z] | null, "output": RAW}]}
Prints {"tasks": [{"seconds": WALL, "cpuSeconds": CPU}, ...], "versions": {...}} as JSON.
"""
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def load(path, dims, dtype):
    x, y, z = dims
    return np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<")).reshape(z, y, x)


def main():
    sys.path.insert(0, sys.argv[1])
    import PIL
    import skimage
    from seed_reference import preprocess, roi_mask, to_8bit

    # The rank filter warns about converting float input to uint8 on every slice.
    warnings.simplefilter("ignore")
    job = json.loads(Path(sys.argv[2]).read_text())
    results = []
    for task in job["tasks"]:
        volume = load(task["input"], task["dims"], task["dtype"])
        if task["kind"] == "preprocess":
            template = None
            if task.get("template"):
                template = to_8bit(load(task["template"], task["templateDims"], "uint8"), "Spectralis")
            start, cpu_start = time.perf_counter(), time.process_time()
            output = preprocess(to_8bit(volume, task["vendor"]), task["vendor"], template)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        else:
            start, cpu_start = time.perf_counter(), time.process_time()
            output = np.stack([roi_mask(volume[z].astype(np.int32), np.zeros(volume[z].shape, bool)) for z in range(volume.shape[0])])
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        output.astype(np.uint8).tofile(task["output"])
        results.append({"seconds": seconds, "cpuSeconds": cpu_seconds})
    versions = {"skimage": skimage.__version__, "pillow": PIL.__version__, "numpy": np.__version__}
    print(json.dumps({"tasks": results, "versions": versions}))


if __name__ == "__main__":
    main()
