"""Running a saved ncnn network: in mnc's process (`mnc bench`), or as a script in a child process
for verification (`python ncnn_runner.py NETWORK FOLDER`), where a native crash of ncnn on a
network it cannot run ends the child, not mnc. Imports only numpy and ncnn: the child starts fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

PARAM_FILE, BIN_FILE, RECORD_FILE = "model.ncnn.param", "model.ncnn.bin", "mnc.json"


def load(artifact: Path, threads: int = 1, exact: bool = True):
    """(the ncnn module, the loaded network). exact: float32 throughout and direct convolutions,
    the arithmetic the derived bound describes; else ncnn's defaults, as an app runs it."""
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute = False
    opt.num_threads = threads
    if exact:
        opt.use_fp16_storage = opt.use_fp16_arithmetic = opt.use_fp16_packed = False
        opt.use_bf16_storage = opt.use_winograd_convolution = False
    artifact = Path(artifact)
    for what, load_file, file in (("layers", net.load_param, PARAM_FILE), ("weights", net.load_model, BIN_FILE)):
        if load_file(str(artifact / file)) != 0:
            raise RuntimeError(f"ncnn could not load the network's {what} ({file})")
    return ncnn, net


def output_blobs(artifact: Path) -> list[str]:
    return json.loads((Path(artifact) / RECORD_FILE).read_text())["mnc.outputs"].split(",")


def run(ncnn, net, name: str, outputs: list[str], batch: np.ndarray) -> list[np.ndarray]:
    """Each sample on its own (ncnn has no batch dimension); the input is copied into a Mat of
    ncnn's own, which layers that work in place may overwrite."""
    results: list[list[np.ndarray]] = [[] for _ in outputs]
    for sample in np.asarray(batch, np.float32):
        with net.create_extractor() as ex:
            ex.input(name, ncnn.Mat(np.ascontiguousarray(sample)).clone())
            for i, blob in enumerate(outputs):
                status, mat = ex.extract(blob)
                if status != 0:
                    raise RuntimeError(f"ncnn could not compute '{blob}' (status {status})")
                results[i].append(np.array(mat))
    return [np.stack(r) for r in results]


def main(artifact: str, folder: str) -> None:
    ncnn, net = load(Path(artifact))
    outputs = output_blobs(Path(artifact))
    with np.load(Path(folder) / "input.npz") as given:
        results = run(ncnn, net, str(given["name"]), outputs, given["batch"])
    np.savez(Path(folder) / "output.npz", *results)


if __name__ == "__main__":
    # Run as a script, its folder comes first on the path, and mnc's target module there is also
    # called ncnn: ncnn must be the runtime.
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    try:
        main(*sys.argv[1:3])
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
