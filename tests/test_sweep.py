"""`mnc sweep`, `mnc bench` and the Python API: the grid's files, its records against `mnc summary`
and separate `mnc compile` runs, failing variants, the table schema, the plot, latency figures,
and the same sweep through a Dask cluster."""

import csv
import hashlib
import json
import platform
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from conftest import SPECS, TINY
from pausing import ended, signal_when_paused, start_paused

import mnc
from mnc import parallel, variants
from mnc.cli import main
from mnc.errors import InputError, VerificationError
from mnc.io import digest
from mnc.variants import FIELDS, Shared, Variant, grid, sweep

V1 = str(SPECS / "v1.mnet")


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    """2 α × 2 resolutions on ONNX, two builds at a time, timed: as a user runs it."""
    out = tmp_path_factory.mktemp("sweep")
    argv = ["sweep", V1, "--alpha", "0.25,0.5", "--resolution", "32,64", "--target", "onnx", "-o", str(out)]
    code = _run([*argv, "--jobs", "2", "--bench", "--runs", "5", "--warmup", "1"])
    return out, code


def test_a_sweep_over_runtimes_names_the_fastest_for_each_network(tmp_path, capsys):
    argv = [
        "sweep",
        V1,
        "--alpha",
        "0.25",
        "--resolution",
        "32,64",
        "--target",
        "onnx,tflite,ncnn",
        "-o",
        str(tmp_path),
    ]
    assert _run([*argv, "--bench", "--runs", "5", "--warmup", "1"]) == 0
    records = json.loads((tmp_path / "sweep.json").read_text())["variants"]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fastest")]
    assert len(lines) == 2  # one per resolution, each timed in three runtimes
    for resolution, line in zip((32, 64), lines):
        timed = sorted((r for r in records if r["resolution"] == resolution), key=lambda r: r["latency_ms"])
        assert line.startswith(f"fastest at α 0.25, {resolution}px: {timed[0]['target']} fp32 ")
        assert all(f"{r['target']} fp32 {r['latency_ms']:.3f}" in line for r in timed)


def test_sweep_writes_every_variant_its_report_and_the_tables(small_sweep):
    out, code = small_sweep
    assert code == 0
    names = [f"v1_{a}_{r}.onnx" for a in ("0.25", "0.5") for r in (32, 64)]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*names, *(n + ".report.json" for n in names), "sweep.csv", "sweep.json", "sweep.png", "sweep.svg"]
    )
    document = json.loads((out / "sweep.json").read_text())
    records = document["variants"]
    assert [(r["alpha"], r["resolution"]) for r in records] == [(0.25, 32), (0.25, 64), (0.5, 32), (0.5, 64)]
    assert document["fields"] == list(FIELDS) and all(list(r) == list(FIELDS) for r in records)
    assert document["machine"]["cpu_flags"] is not None  # latency figures name the CPU they come from
    for r in records:
        report = json.loads((out / (r["artifact"].split("/")[-1] + ".report.json")).read_text())
        assert r["verdict"] == "pass" and r["exit_code"] == 0 and r["error"] is None
        assert r["sha256"] == report["artifact"]["sha256"] == _sha256(r["artifact"])
        assert r["size_bytes"] == report["artifact"]["size_bytes"]
        assert isinstance(r["latency_ms"], float) and r["latency_min_ms"] <= r["latency_ms"] <= r["latency_p90_ms"]
        assert r["threads"] == 1 and "ONNX Runtime" in r["runtime"]
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(FIELDS)
    assert [(row["alpha"], row["resolution"], row["sha256"]) for row in rows] == [
        (str(r["alpha"]), str(r["resolution"]), r["sha256"]) for r in records
    ]


def test_sweep_records_equal_mnc_summary_and_separate_compiles(small_sweep, tmp_path, capsys):
    out, _ = small_sweep
    for r in json.loads((out / "sweep.json").read_text())["variants"]:
        size = ["--alpha", str(r["alpha"]), "--resolution", str(r["resolution"])]
        capsys.readouterr()
        assert _run(["summary", V1, *size, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert (r["params"], r["macs"]) == (summary["params"], summary["macs"])
        assert _run(["compile", V1, *size, "--target", "onnx", "-o", str(tmp_path)]) == 0
        assert _sha256(tmp_path / r["artifact"].split("/")[-1]) == r["sha256"]


def test_sweep_plot_is_a_picture_with_content(small_sweep):
    out, _ = small_sweep
    from PIL import Image

    with Image.open(out / "sweep.png") as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    coloured = np.any(np.abs(pixels.astype(int) - pixels.mean(axis=2, keepdims=True)) > 40, axis=2)
    assert coloured.mean() > 0.002  # the series' markers and lines, not only black text on white
    root = ElementTree.parse(out / "sweep.svg").getroot()
    assert root.tag.endswith("svg") and len(list(root.iter())) > 100


def test_a_failing_variant_is_recorded_and_the_others_go_on(tmp_path, capsys):
    # Resolution 8 collapses V1's feature map: bad input for that variant, at its row in the spec.
    code = _run(["sweep", V1, "--alpha", "0.25", "--resolution", "32,8", "--target", "onnx", "-o", str(tmp_path)])
    assert code == 2
    records = json.loads((tmp_path / "sweep.json").read_text())["variants"]
    passed, failed = records
    assert passed["verdict"] == "pass" and (tmp_path / "v1_0.25_32.onnx").exists()
    assert failed["verdict"] == "bad input" and failed["exit_code"] == 2 and failed["sha256"] is None
    assert "v1.mnet:31:" in failed["error"] and "resolution 8 is too small" in failed["error"]
    assert not (tmp_path / "v1_0.25_8.onnx").exists()
    err = capsys.readouterr().err
    assert "[2/2]" in err and "bad input" in err  # plain progress lines when stderr is not a terminal


def test_the_sweep_exit_code_is_the_worst_of_its_variants(tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise VerificationError("verification failed: injected")

    monkeypatch.setattr(variants, "compile_spec", failing)
    record = variants.compile_variant(Shared(V1), Variant("onnx", 0.25, 32), tmp_path)
    assert (record["verdict"], record["exit_code"]) == ("verification failed", 3)
    result = variants.SweepResult([dict(record, exit_code=c) for c in (0, 3, 2)], [], [])
    assert result.exit_code == 3


def test_variants_differing_only_in_precision_or_quantisation_get_folders_of_their_own(tmp_path):
    shared = Shared(V1, calib="synthetic", calib_samples=4)
    grid_ = grid(["onnx", "tflite"], [0.25], [32], precisions=["fp32", "fp16"], quantize=[None, "int8"])
    # ONNX takes no precision: one variant per quantisation; TFLite int8 with fp16 is refused by the target.
    assert len(grid_) == 2 + 4
    result = sweep(shared, grid_, tmp_path, jobs=1, plot=False)
    by = {(r["target"], r["precision"], r["quantize"]): r for r in result.records}
    assert by[("onnx", "fp32", None)]["artifact"] == str(tmp_path / "v1_0.25_32.onnx")
    assert by[("onnx", "fp32", "int8")]["artifact"] == str(tmp_path / "int8" / "v1_0.25_32.onnx")
    assert by[("tflite", "fp16", None)]["artifact"] == str(tmp_path / "fp16" / "v1_0.25_32.tflite")
    assert by[("tflite", "fp32", "int8")]["verdict"] == "pass"
    refused = by[("tflite", "fp16", "int8")]
    assert refused["exit_code"] == 2 and "int8 models keep int8 weights" in refused["error"]
    assert result.exit_code == 2


def test_sweep_arguments_are_checked(tmp_path, capsys):
    base = ["sweep", V1, "--target", "onnx", "-o", str(tmp_path)]
    assert _run([*base, "--alpha", "0.5,wide"]) == 2
    assert "expected a number, got 'wide'" in capsys.readouterr().err
    assert _run([*base, "--jobs", "0"]) == 2
    assert _run([*base, "--target", "onnx,tensorrt"]) == 2
    assert "unknown target 'tensorrt'" in capsys.readouterr().err
    assert _run([*base, "--calib", "synthetic"]) == 2
    assert "--calib is for --quantize int8" in capsys.readouterr().err
    assert _run([*base, "--precision", "fp16"]) == 2
    assert "--precision: no target of this sweep takes it (only coreml, tflite, ncnn)" in capsys.readouterr().err
    assert _run([*base, "--quantize", "none,int8"]) == 2
    assert "--quantize int8 needs calibration data" in capsys.readouterr().err
    assert _run(["sweep", str(tmp_path / "absent.mnet"), *base[2:]]) == 2
    assert "absent.mnet" in capsys.readouterr().err
    (tmp_path / "a file").write_text("")
    assert _run([*base[:-1], str(tmp_path / "a file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "a file").unlink()
    assert _run([*base, "--deployment-target", "iOS17"]) == 2
    assert "--deployment-target: no target of this sweep takes it (only coreml)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written for a sweep refused before it starts


@pytest.mark.parametrize("target", ["onnx", "tflite", "ort"])
def test_bench_json_has_the_latency_figures(target, tmp_path, capsys):
    assert _run(["compile", V1, "--alpha", "0.25", "--resolution", "32", "--target", target, "-o", str(tmp_path)]) == 0
    (artifact,) = [p for p in tmp_path.iterdir() if p.name.endswith("." + target)]
    capsys.readouterr()
    assert _run(["bench", str(artifact), "--threads", "2", "--runs", "7", "--warmup", "2", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert {"median_ms", "p10_ms", "p90_ms", "min_ms", "runs", "threads", "runtime", "cpu_flags"} <= set(figures)
    assert (figures["runs"], figures["threads"], figures["warmup"]) == (7, 2, 2)
    assert 0 < figures["min_ms"] <= figures["p10_ms"] <= figures["median_ms"] <= figures["p90_ms"]
    assert ("LiteRT" if target == "tflite" else "ONNX Runtime") in figures["runtime"]


def test_bench_refuses_what_it_cannot_time(tmp_path, capsys):
    assert _run(["bench", str(tmp_path / "missing.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "broken.tflite").write_bytes(b"not a model")
    assert _run(["bench", str(tmp_path / "broken.tflite")]) == 2
    assert "cannot be loaded by LiteRT" in capsys.readouterr().err
    if platform.system() != "Darwin":
        assert (
            _run(["compile", V1, "--alpha", "0.25", "--resolution", "32", "--target", "coreml", "-o", str(tmp_path)])
            == 0
        )
        assert _run(["bench", str(tmp_path / "v1_0.25_32.mlpackage")]) == 2
        assert "needs macOS" in capsys.readouterr().err


def test_python_api_is_the_command_line(tmp_path):
    result = mnc.compile(V1, target="tflite", alpha=0.25, resolution=32, out_dir=tmp_path, precision="fp16")
    assert result.typed.verification.passed and result.typed.target_section["precision"] == "fp16"
    assert result.report["macs"] == result.typed.macs  # the JSON as a dict, as README shows it
    assert mnc.summary(V1, alpha=0.25, resolution=32)["macs"] == result.typed.macs
    assert mnc.verify(result.artifact)["verdict"] == "pass"
    assert mnc.bench(result.artifact, runs=3, warmup=0).runs == 3
    # A Python caller is told of the keyword arguments it gave; the command line, of its flags.
    with pytest.raises(InputError, match=re.escape("calib= is for quantize='int8'")):
        mnc.compile(V1, out_dir=tmp_path, calib="synthetic")
    with pytest.raises(InputError, match=re.escape("quantize='int4': choose one of int8")):
        mnc.compile(V1, out_dir=tmp_path, quantize="int4")
    with pytest.raises(TypeError, match="unknown target option"):
        mnc.compile(V1, out_dir=tmp_path, precission="fp16")


def _on_a_dask_cluster(shared: Shared, *sweeps) -> list:
    """Each (grid, out_dir) swept on an in-process Dask cluster of one worker."""
    distributed = pytest.importorskip("distributed")
    try:
        with distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster:
            return [sweep(shared, g, out, cluster=cluster.scheduler_address, plot=False) for g, out in sweeps]
    finally:
        parallel._fork_allowed = True  # the in-process worker said never to fork; this process may again


def test_sweep_on_a_dask_cluster_brings_back_the_same_artifacts(tmp_path):
    spec = tmp_path / "tiny.mnet"
    spec.write_text(TINY)
    shared = Shared(str(spec), calib="synthetic", calib_samples=4)
    grid_ = grid(["onnx", "ort"], [0.5, 1.0], [32], quantize=[None, "int8"])
    local = sweep(shared, grid_, tmp_path / "local", jobs=1, plot=False)
    # A variant that fails on a worker is reported with the user's spec path, not the worker's copy.
    remote, failed = _on_a_dask_cluster(
        shared, (grid_, tmp_path / "remote"), (grid(["onnx"], [0.5], [2]), tmp_path / "bad")
    )
    assert local.exit_code == remote.exit_code == 0
    (record,) = failed.records
    assert record["exit_code"] == 2 and record["error"].startswith(f"{spec}:"), record["error"]
    for a, b in zip(local.records, remote.records):
        assert a["sha256"] == b["sha256"] and a["params"] == b["params"]
        assert b["artifact"].startswith(str(tmp_path / "remote"))
        assert open(a["artifact"], "rb").read() == open(b["artifact"], "rb").read()
        report = json.loads(open(b["report"]).read())
        assert report["artifact"]["path"] == b["artifact"] and report["spec"]["path"] == str(spec)
    config = "tiny_1.0_32.required_operators.config"
    assert (tmp_path / "remote" / config).read_bytes() == (tmp_path / "local" / config).read_bytes()


def test_a_dask_build_brings_back_the_anchors_beside_its_artifact(tmp_path):
    """A detection network's default boxes are written beside its artifact by the build, not by the
    target: a remote build ships them back and its report names where they are installed."""
    shared = Shared(str(SPECS.parent / "examples" / "specs" / "ssdlite320_mobilenet_v3_large.mnet"), classes=3)
    grid_ = grid(["onnx"], [0.25])
    local = sweep(shared, grid_, tmp_path / "local", jobs=1, plot=False)
    (remote,) = _on_a_dask_cluster(shared, (grid_, tmp_path / "remote"))
    (here,), (there,) = local.records, remote.records
    assert here["exit_code"] == there["exit_code"] == 0
    mine, theirs = (json.loads(open(r["report"]).read())["artifact"]["anchors"] for r in (here, there))
    assert theirs == there["artifact"] + ".anchors.json"
    assert open(theirs, "rb").read() == open(mine, "rb").read()


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_sweep_leaves_finished_pairs_and_nothing_half_built(tmp_path, sig, code):
    # Signalled while one worker installs a variant (its signals held) and the other is wherever it is.
    out, stderr = tmp_path / "out", tmp_path / "stderr"
    argv = ["sweep", str(SPECS / "v2.mnet"), "--alpha", "1.0,0.75", "--resolution", "224,192"]
    proc = start_paused("installing", stderr, *argv, "--target", "coreml,onnx", "--jobs", "2", "-o", str(out))
    signal_when_paused(proc, stderr, "installing", sig)
    err = ended(proc, stderr)  # no worker left behind
    assert proc.returncode == code, err
    assert "Traceback" not in "\n".join(err) and err[-1].endswith("nothing half-written is left")
    assert not list(out.rglob(".*.staging"))  # the workers' half-built variants are gone
    reports = list(out.rglob("*.report.json"))
    assert reports  # the variant being installed when the signal came is in place
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [r.name for r in reports] + [r.name[: -len(".report.json")] for r in reports]
    )
    for path in reports:  # each one whole
        report = json.loads(path.read_text())
        artifact = path.with_name(path.name[: -len(".report.json")])
        assert digest(artifact) == (report["artifact"]["size_bytes"], report["artifact"]["sha256"])


STOPPED_IN_A_FINALIZER = """
import os, signal, sys, time
from mnc import parallel

class Slow:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while Python runs a finalizer
        time.sleep(0.2)

parallel._cleanup_worker_init()
with parallel.exit_when_stopped():
    Slow()
    for _ in range(200):
        time.sleep(0.01)
    print("the task went on after SIGTERM")
"""


def test_a_stop_swallowed_by_a_finalizer_still_ends_the_task():
    # Python prints and drops exceptions raised in __del__ and weakref finalizers; a worker stopped
    # there must still unwind its task and leave, silently.
    done = subprocess.run([sys.executable, "-c", STOPPED_IN_A_FINALIZER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
