"""Fingerprint what mnc builds, to prove a refactoring changed no behaviour.

Builds every bundled spec and example through the command line (ONNX; Core ML fp16 and fp32; int8
ONNX and int8 Core ML; TFLite, .ort and ncnn at 96²), plus trained weights, an image-input classifier
and a non-default α/ρ, and records for each artifact: the hashes of its weight data and of its whole
files, its op list, its outputs on seeded inputs (each target's runtime; mnc's executor for
.mlpackage), its report (timings removed) and what `mnc verify` says of it. Also `mnc summary --json`
and `mnc ir` of every spec.

    python tools/artifact_fingerprint.py -o before.json            # before the change
    python tools/artifact_fingerprint.py -o after.json --compare before.json

Outputs are compared bit for bit: run both on the same machine, from checkouts at the same path
(paths go into reports and into int8 metadata). Exit 1 if anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's mnc, also where another one is installed
SPECS = sorted((ROOT / "specs").glob("*.mnet")) + sorted((ROOT / "examples" / "specs").glob("*.mnet"))
WEIGHTS = ROOT / "tests" / "fixtures" / "torchvision" / "mobilenet_v2_w0.5.safetensors"
DIGITS = ROOT / "tests" / "fixtures" / "digits"  # a trained network: int8 verification passes on it
INT8 = ["--quantize", "int8", "--calib", "synthetic", "--calib-samples", "8"]
VARIANTS = {  # name → extra arguments of `mnc compile`
    "onnx": ["--target", "onnx"],
    "coreml_fp16": ["--target", "coreml"],
    "coreml_fp32": ["--target", "coreml", "--precision", "fp32"],
    "onnx_int8": ["--target", "onnx", *INT8],
    "coreml_int8_ios17": ["--target", "coreml", "--deployment-target", "iOS17", *INT8],
    "tflite": ["--target", "tflite", "--resolution", "96"],
    "tflite_fp16": ["--target", "tflite", "--precision", "fp16", "--resolution", "96"],
    "tflite_int8": ["--target", "tflite", "--resolution", "96", *INT8],
    "ncnn": ["--target", "ncnn", "--resolution", "96"],
    "ncnn_fp16": ["--target", "ncnn", "--precision", "fp16", "--resolution", "96"],
    "ort": ["--target", "ort", "--resolution", "96"],
}
EXTRA = {  # (spec, variant name) → arguments, for paths the table above does not reach
    ("v1", "onnx_alpha0.5_r160"): ["--target", "onnx", "--alpha", "0.5", "--resolution", "160"],
    ("v1", "coreml_int8_ios16_r128"): ["--target", "coreml", "--resolution", "128", *INT8],
    ("v2", "onnx_torchvision_weights"): [
        "--target",
        "onnx",
        "--weights",
        str(WEIGHTS),
        "--alpha",
        "0.5",
        "--resolution",
        "96",
    ],
    ("v2", "coreml_fp16_torchvision_weights"): [
        "--target",
        "coreml",
        "--weights",
        str(WEIGHTS),
        "--alpha",
        "0.5",
        "--resolution",
        "96",
    ],
    ("v2", "coreml_image_labels"): ["--target", "coreml", "--image-input", "--labels", "LABELS", "--resolution", "96"],
    ("v2", "onnx_passes_none"): ["--target", "onnx", "--passes", "none", "--resolution", "96"],
    ("v3_small", "onnx_mobile_batch2"): ["--target", "onnx", "--batch", "2", "--mobile-ops", "--resolution", "96"],
    ("v3_small", "ort_int8"): ["--target", "ort", "--resolution", "96", *INT8],
}
IMAGE = ["--image-input", "--resolution", "96"]
IMAGE_VARIANTS = {  # the image input on every target that takes it: the normalisation lowered by each
    "onnx_image": ["--target", "onnx", *IMAGE],
    "onnx_int8_image": ["--target", "onnx", *IMAGE, *INT8],
    "onnx_mobile_image": ["--target", "onnx", "--mobile-ops", *IMAGE],
    "coreml_fp16_image": ["--target", "coreml", *IMAGE],
    "coreml_fp32_image": ["--target", "coreml", "--precision", "fp32", *IMAGE],
    "coreml_int8_ios17_image": ["--target", "coreml", "--deployment-target", "iOS17", *IMAGE, *INT8],
    "tflite_image": ["--target", "tflite", *IMAGE],
    "tflite_fp16_image": ["--target", "tflite", "--precision", "fp16", *IMAGE],
    "tflite_int8_image": ["--target", "tflite", *IMAGE, *INT8],
    "ncnn_image": ["--target", "ncnn", *IMAGE],
}
# V2 and V3 Small (whose squeeze-excite gates are hard sigmoids, which TFLite decomposes).
EXTRA.update({(stem, v): a for stem in ("v2", "v3_small") for v, a in IMAGE_VARIANTS.items()})
DIGITS_ARGS = [
    "--alpha",
    "0.35",
    "--resolution",
    "32",
    "--weights",
    str(DIGITS / "mobilenet_v2_digits.safetensors"),
    "--quantize",
    "int8",
    "--calib",
    str(DIGITS / "calib"),
    "--calib-samples",
    "64",
]
EXTRA.update(
    {
        ("v2", "digits_onnx_int8"): ["--target", "onnx", *DIGITS_ARGS],
        ("v2", "digits_onnx_int8_percentile"): ["--target", "onnx", *DIGITS_ARGS, "--calib-method", "percentile"],
        ("v2", "digits_coreml_int8_ios16"): ["--target", "coreml", *DIGITS_ARGS],
        ("v2", "digits_coreml_int8_ios17"): ["--target", "coreml", "--deployment-target", "iOS17", *DIGITS_ARGS],
    }
)
VOLATILE = {"timings_s", "seconds"}  # report fields that measure time


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mnc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, "-m", "mnc", *args], cwd=cwd, env=env, capture_output=True, text=True)


def strip_volatile(value):
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value


def seeded_inputs(shape: list[int], image: bool) -> np.ndarray:
    rng = np.random.default_rng(1234)
    if image:
        return rng.integers(0, 256, (2, *shape)).astype(np.float32)
    return rng.standard_normal((2, *shape)).astype(np.float32)


def joined(outputs) -> np.ndarray:
    """A network's outputs as one array (detection heads have several), each flattened per sample."""
    outputs = list(outputs)
    return outputs[0] if len(outputs) == 1 else np.concatenate([np.reshape(o, (len(o), -1)) for o in outputs], 1)


def run_session(session, x: np.ndarray) -> list[np.ndarray]:
    """An ONNX Runtime session on every sample of x: a model with a fixed batch (`--batch N`) takes N
    samples a run, the last run filled up with copies of its last sample, whose outputs are dropped."""
    batch = session.get_inputs()[0].shape[0]
    if not isinstance(batch, int) or batch == len(x):
        return session.run(None, {"input": x})
    parts = []
    for start in range(0, len(x), batch):
        group = x[start : start + batch]
        taken = len(group)
        group = np.concatenate([group, np.repeat(group[-1:], batch - taken, axis=0)])
        parts.append([out[:taken] for out in session.run(None, {"input": group})])
    return [np.concatenate(outputs) for outputs in zip(*parts)]


def onnx_facts(path: Path, shape: list[int], image: bool) -> dict:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    weights = {t.name: sha(t.raw_data or t.SerializeToString()) for t in model.graph.initializer}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = seeded_inputs(shape, image)
    out = joined(run_session(session, x.astype(np.uint8) if image else x))  # an image input takes uint8
    return {
        "file_sha256": sha(path.read_bytes()),
        "weights_sha256": sha(json.dumps(weights, sort_keys=True).encode()),
        "initializers": len(weights),
        "ops": [f"{n.op_type}:{n.name}" for n in model.graph.node],
        "metadata_keys": [p.key for p in model.metadata_props],
        "outputs_sha256": sha(np.ascontiguousarray(out).tobytes()),
        "outputs_head": [float(v) for v in np.ravel(out)[:4]],
    }


def ort_facts(path: Path, shape: list[int]) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = joined(run_session(session, seeded_inputs(shape, False)))
    return {
        "file_sha256": sha(path.read_bytes()),
        "outputs_sha256": sha(np.ascontiguousarray(out).tobytes()),
        "outputs_head": [float(v) for v in np.ravel(out)[:4]],
    }


def tflite_facts(path: Path, shape: list[int], image: bool) -> dict:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(path.read_bytes(), 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = model.operatorCodes
    weights = {
        bytes(t.name).decode(): sha(bytes(model.buffers[t.buffer].data))
        for t in model.subgraphs[0].tensors
        if t.buffer and model.buffers[t.buffer].data is not None
    }
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    (inp,) = interpreter.get_input_details()
    x = seeded_inputs(shape, image)  # the report gives the model's own (NHWC) shape
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
    interpreter.invoke()
    out = joined(interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details())
    return {
        "file_sha256": sha(path.read_bytes()),
        "weights_sha256": sha(json.dumps(weights, sort_keys=True).encode()),
        "ops": [
            f"{names[codes[o.opcodeIndex].builtinCode]}:v{codes[o.opcodeIndex].version}"
            for o in model.subgraphs[0].operators
        ],
        "outputs_sha256": sha(np.ascontiguousarray(out).tobytes()),
        "outputs_head": [float(v) for v in np.ravel(out)[:4]],
    }


def ncnn_facts(path: Path, shape: list[int], image: bool) -> dict:
    from mnc.backends.ncnn import read_layers, run_ncnn

    files = {p.name: sha(p.read_bytes()) for p in sorted(path.iterdir()) if p.is_file()}
    out = joined(run_ncnn(path, {"input": seeded_inputs(shape, image)}))
    return {
        "files_sha256": files,
        "layers": [f"{t}:{n}" for t, n, _ in read_layers(path)],
        "outputs_sha256": sha(np.ascontiguousarray(out).tobytes()),
        "outputs_head": [float(v) for v in np.ravel(out)[:4]],
    }


def coreml_facts(path: Path, shape: list[int], image: bool) -> dict:
    try:
        from mnc.verification.coreml_exec import CoreMLProgram, run_coreml
    except ImportError:
        from mnc.backends.coreml_exec import CoreMLProgram, run_coreml

    files = {
        p.relative_to(path).as_posix(): sha(p.read_bytes())
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "Manifest.json"
    }
    program = CoreMLProgram(path)
    out = joined(run_coreml(path, {"input": seeded_inputs(shape, image)}))
    return {
        "files_sha256": files,
        "weights_sha256": files.get("Data/com.apple.CoreML/weights/weight.bin"),
        "ops": [f"{op.type}:{op.outputs[0].name}" for op in program.operations],
        "metadata_keys": sorted(program.spec.description.metadata.userDefined),
        "outputs_sha256": sha(np.ascontiguousarray(out).tobytes()),
        "outputs_head": [float(v) for v in np.ravel(out)[:4]],
    }


def build(spec: Path, variant: str, args: list[str], work: Path) -> dict:
    out = work / f"{spec.stem}.{variant}"
    labels = work / "labels.txt"
    args = [str(labels) if a == "LABELS" else a for a in args]
    done = mnc("compile", str(spec), "-o", str(out), *args, cwd=ROOT)
    record = {"args": args, "exit": done.returncode}
    if done.returncode != 0:
        record["stderr"] = done.stderr.strip().splitlines()[-3:]
        return record
    (report_path,) = out.glob("*.report.json")
    report = json.loads(report_path.read_text())
    artifact = Path(report["artifact"]["path"])
    record["report"] = strip_volatile({k: v for k, v in report.items() if k != "artifact"})
    record["report"]["artifact"] = {k: v for k, v in report["artifact"].items() if k != "path"}
    shape = report["artifact"]["input"]["shape"][1:]
    if artifact.suffix == ".onnx":
        record["artifact"] = onnx_facts(artifact, shape, "--image-input" in args)
    elif artifact.suffix == ".ort":
        record["artifact"] = ort_facts(artifact, shape)
    elif artifact.suffix == ".tflite":
        record["artifact"] = tflite_facts(artifact, shape, "--image-input" in args)
    elif artifact.suffix == ".ncnn":
        record["artifact"] = ncnn_facts(artifact, shape, "--image-input" in args)
    else:
        record["artifact"] = coreml_facts(artifact, shape, "--image-input" in args)
    verify_args = ["--weights", args[args.index("--weights") + 1]] if "--weights" in args else []
    verified = mnc("verify", str(artifact), "--json", *verify_args, cwd=ROOT)
    record["verify_exit"] = verified.returncode
    if verified.returncode == 0:
        result = strip_volatile(json.loads(verified.stdout))
        result.pop("artifact", None)
        record["verify"] = result
    else:
        record["verify_stderr"] = verified.stderr.strip().splitlines()[-3:]
    return record


def spec_facts(spec: Path) -> dict:
    summary = mnc("summary", str(spec), "--json", cwd=ROOT)
    ir = mnc("ir", str(spec), cwd=ROOT)
    ir_lowered = mnc("ir", str(spec), "--after", "none", cwd=ROOT)
    return {
        "summary_sha256": sha(summary.stdout.encode()),
        "summary_totals": {k: v for k, v in json.loads(summary.stdout).items() if k != "layers"}
        if summary.returncode == 0
        else summary.stderr,
        "ir_sha256": sha(ir.stdout.encode()),
        "ir_lowered_sha256": sha(ir_lowered.stdout.encode()),
    }


def fingerprint(jobs: int, only_specs: set[str] | None = None, only_variants: set[str] | None = None) -> dict:
    """Every spec × variant, or the ones named (a quick check while refactoring; the full run proves it)."""
    work = Path(tempfile.mkdtemp(prefix="mnc-fingerprint-"))
    (work / "labels.txt").write_text("".join(f"class {i}\n" for i in range(1000)))
    specs = [s for s in SPECS if only_specs is None or s.stem in only_specs]
    tasks = [(spec, v, a) for spec in specs for v, a in VARIANTS.items()]
    tasks += [(next(s for s in SPECS if s.stem == stem), v, a) for (stem, v), a in EXTRA.items()]
    tasks = [t for t in tasks if t[0] in specs and (only_variants is None or t[1] in only_variants)]
    with ThreadPoolExecutor(jobs) as pool:
        builds = pool.map(lambda t: (f"{t[0].stem}/{t[1]}", build(t[0], t[1], t[2], work)), tasks)
        facts = pool.map(lambda s: (s.stem, spec_facts(s)), specs)
        return {"builds": dict(builds), "specs": dict(facts)}


def differences(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if key not in new:
                out.append(f"{path}/{key}: removed")
            elif key not in old:
                out.append(f"{path}/{key}: added")
            else:
                out += differences(old[key], new[key], f"{path}/{key}")
        return out
    if old != new:
        show = lambda v: json.dumps(v)[:160]  # noqa: E731
        return [f"{path}: {show(old)} → {show(new)}"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", required=True, help="where to write the fingerprints (JSON)")
    parser.add_argument("--compare", help="fingerprints of an earlier build to compare with")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--specs", help="only these specs (comma-separated stems, e.g. v2,lraspp_mobilenet_v3_large)")
    parser.add_argument("--variants", help="only these variants (comma-separated names, e.g. onnx,tflite_int8)")
    args = parser.parse_args()
    pick = lambda text: set(text.split(",")) if text else None  # noqa: E731
    result = fingerprint(args.jobs, pick(args.specs), pick(args.variants))
    Path(args.output).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    failed = [k for k, b in result["builds"].items() if b["exit"] != 0 or b.get("verify_exit") != 0]
    print(f"{len(result['builds'])} builds, {len(result['specs'])} specs; failed: {failed or 'none'}")
    if args.compare:
        # Each run builds in its own temporary folder; its name is not part of what is compared.
        same_work = lambda text: json.loads(re.sub(r"/tmp/mnc-fingerprint-[A-Za-z0-9_]+", "<work>", text))  # noqa: E731
        diff = differences(same_work(Path(args.compare).read_text()), same_work(json.dumps(result)))
        print("\n".join(diff) if diff else "identical")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
