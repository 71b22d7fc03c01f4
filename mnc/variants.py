"""`mnc sweep`: the MobileNet papers' family of models, every α × resolution (or ρ) × target
(× precision × quantisation), each compiled and verified exactly as `mnc compile` does it (same
bytes), written with its report under one folder, optionally timed, then tabulated and plotted.

Builds run in worker processes (--jobs, default one per core) or on a running Dask scheduler
(--cluster). A remote worker gets the spec, weights, labels and calibration data as bytes, builds
in a folder of its own and sends back the artifact, its companions and its report, which are put in
place here as a local build would put them. Latency is measured afterwards, here, one variant at a
time, with nothing else running. A variant that fails is recorded with its error; the others go on.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
import time
import traceback
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from mnc.backends import TARGETS, get_target
from mnc.backends.target import TargetOptions
from mnc.errors import EXIT_INTERNAL, PYTHON, InputError, MncError, Wording, current_wording, param, wording
from mnc.frontend import load_spec
from mnc.io import publish, remove_stale_staging, staged, write_atomic
from mnc.latency import bench, cpu, cpu_line
from mnc.parallel import can_fork, default_jobs, exit_when_stopped, never_fork, process_pool
from mnc.pipeline import BuildRequest, CompileResult, compile_spec, quantization
from mnc.pipeline.report import REPORT_SUFFIX, Report, report_bytes
from mnc.quant.calibrate import DEFAULT_METHOD
from mnc.version import __version__

VERDICTS = {0: "pass", 2: "bad input", 3: "verification failed", EXIT_INTERNAL: "internal error"}

# One row of sweep.csv, one record of sweep.json (which adds the machine, and keeps numbers as numbers).
FIELDS = (
    "target",
    "alpha",
    "resolution",
    "rho",
    "precision",
    "quantize",
    "params",
    "macs",
    "size_bytes",
    "sha256",
    "verdict",
    "exit_code",
    "error",
    "compile_s",
    "latency_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "latency_min_ms",
    "threads",
    "runtime",
    "artifact",
    "report",
)


@dataclass(frozen=True)
class Variant:
    """One point of the grid. None: the spec's (or the target's) own value."""

    target: str
    alpha: float | None = None
    resolution: int | None = None
    rho: float | None = None
    precision: str | None = None
    quantize: str | None = None

    @property
    def folder(self) -> str:
        """Where under the sweep's folder it is written: variants that differ only in precision or
        quantisation would otherwise have the same file name."""
        return "-".join(p for p in (self.precision, self.quantize) if p)

    def label(self) -> str:
        size = f"resolution {self.resolution}" if self.resolution else f"ρ {self.rho:g}" if self.rho else ""
        words = [
            self.target,
            f"α {self.alpha:g}" if self.alpha else "",
            size,
            self.precision or "",
            self.quantize or "",
        ]
        return " ".join(w for w in words if w)


@dataclass(frozen=True)
class Shared:
    """What every variant of a sweep shares: all that `mnc compile` takes but the grid's axes."""

    spec: str
    classes: int | None = None
    weights: str | None = None
    weights_layout: str | None = None
    seed: int = 0
    passes: str = "default"
    calib: str | None = None
    calib_samples: int = 100
    calib_method: str = DEFAULT_METHOD
    calib_name: str | None = None  # how a remote copy of the data is named (as the user named it)
    bias_correction: bool = True
    equalization: bool = True
    max_memory: int | None = None
    target_options: dict = field(default_factory=dict)  # image_input, labels, deployment_target

    def request(self, variant: Variant) -> BuildRequest:
        """What `mnc compile` would be asked for this variant."""
        options = {k: v for k, v in self.target_options.items() if k in TARGETS[variant.target].choices}
        if variant.precision:
            options["precision"] = variant.precision
        return BuildRequest(
            self.spec,
            alpha=variant.alpha,
            rho=variant.rho,
            resolution=variant.resolution,
            classes=self.classes,
            weights=self.weights,
            weights_layout=self.weights_layout,
            seed=self.seed,
            max_memory=self.max_memory,
            target=variant.target,
            passes=self.passes,
            options=TargetOptions(**options),
            quantization=quantization(
                variant.quantize,
                self.calib if variant.quantize else None,
                self.calib_samples,
                self.calib_method,
                self.calib_name,
                bias_correction=self.bias_correction,
                equalization=self.equalization,
            ),
        )


def grid(
    targets: Iterable[str],
    alphas: Iterable[float | None] = (None,),
    resolutions: Iterable[int | None] = (None,),
    rhos: Iterable[float | None] = (None,),
    precisions: Iterable[str | None] = (None,),
    quantize: Iterable[str | None] = (None,),
) -> list[Variant]:
    """Every combination, in this order (targets outermost). A precision goes only to the targets
    that take one; the others get one variant at their own precision."""
    resolutions, rhos = list(resolutions), list(rhos)
    if resolutions != [None] and rhos != [None]:
        raise InputError(f"give {param('resolution')} or {param('rho')}, not both")
    sizes = [(r, None) for r in resolutions] if rhos == [None] else [(None, r) for r in rhos]
    targets, precisions = list(targets), list(precisions)
    if precisions != [None] and not any("precision" in get_target(t).choices for t in targets):
        takers = [t for t in TARGETS if "precision" in TARGETS[t].choices]
        raise InputError(f"{param('precision')}: no target of this sweep takes it (only {', '.join(takers)})")
    variants: list[Variant] = []
    for name in targets:
        takes_precision = "precision" in get_target(name).choices
        for alpha in alphas:
            for resolution, rho in sizes:
                for precision in precisions if takes_precision else [None]:
                    for q in quantize:
                        v = Variant(name, alpha, resolution, rho, precision, q)
                        if v not in variants:
                            variants.append(v)
    return variants


def _record(variant: Variant, exit_code: int, seconds: float, error: str = "", result=None) -> dict:
    record = dict.fromkeys(FIELDS)
    record.update(asdict(variant))
    record.update(
        verdict=VERDICTS.get(exit_code, f"exit {exit_code}"), exit_code=exit_code, compile_s=round(seconds, 3)
    )
    record["error"] = error or None
    if result is not None:
        r = result.typed
        record.update(
            alpha=r.alpha,
            resolution=r.resolution,
            rho=r.rho,
            precision=(r.target_section or {}).get("precision", "fp32"),
            params=r.params,
            macs=r.macs,
            size_bytes=r.artifact.size_bytes,
            sha256=r.artifact.sha256,
            artifact=str(result.artifact),
            report=str(result.report_path),
        )
    return record


def compile_variant(shared: Shared, variant: Variant, out_dir: Path) -> dict:
    """Compile one variant as `mnc compile` would; its record, whether it passed or not."""
    return _compile(shared, variant, out_dir)[0]


def _compile(shared: Shared, variant: Variant, out_dir: Path) -> tuple[dict, CompileResult | None]:
    start = time.perf_counter()
    try:
        result = compile_spec(shared.request(variant), Path(out_dir) / variant.folder)
    except MncError as exc:
        return _record(variant, exc.exit_code, time.perf_counter() - start, exc.render()), None
    except Exception as exc:  # a bug in mnc: recorded like the rest, with its traceback
        text = f"internal error (a bug in mnc): {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        return _record(variant, EXIT_INTERNAL, time.perf_counter() - start, text), None
    return _record(variant, 0, time.perf_counter() - start, result=result), result


# ---- where the builds run ------------------------------------------------------------------------


def _local_task(shared: Shared, variant: Variant, out_dir: Path, words: Wording) -> dict:
    with exit_when_stopped(), wording(words):
        return compile_variant(shared, variant, out_dir)


def _run_local(
    shared: Shared, variants: list[Variant], out_dir: Path, jobs: int, words: Wording, done: Callable
) -> None:
    # Workers forked before anything started ONNX Runtime can each fork again for the reference.
    workers = max(1, min(jobs, len(variants)))
    with process_pool("fork" if can_fork() else "spawn", workers=workers, cleanup=True) as pool:
        futures = {pool.submit(_local_task, shared, v, out_dir, words): v for v in variants}
        for future in as_completed(futures):
            variant = futures[future]
            try:
                done(variant, future.result())
            except BrokenProcessPool as exc:
                done(variant, _record(variant, EXIT_INTERNAL, 0.0, f"the worker process died ({exc})"))


def _files(root: Path) -> dict[str, bytes]:
    if root.is_file():
        return {"": root.read_bytes()}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _materialise(files: dict[str, bytes], at: Path) -> Path:
    for rel, data in files.items():
        path = at / rel if rel else at
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return at


def _inputs(shared: Shared) -> dict[str, tuple[str, dict[str, bytes]]]:
    """The files a remote worker needs, by role: (file name, contents)."""
    paths = {"spec": shared.spec, "weights": shared.weights, "labels": shared.target_options.get("labels")}
    if shared.calib not in (None, "synthetic"):
        paths["calib"] = shared.calib
    found = {}
    for role, path in paths.items():
        if path is None:
            continue
        p = Path(path)
        if not p.exists():
            raise InputError(f"cannot read '{path}' to send it to the cluster: no such file or directory")
        found[role] = (p.name, _files(p))
    return found


def remote_compile(shared: Shared, inputs: dict, variant: Variant, words: Wording = PYTHON) -> tuple[dict, dict]:
    """A Dask task: build one variant from copies of its inputs in a folder of the worker's own.
    Returns its record and, if it passed, the files to install: the artifact's, its companions',
    and its report (a Report). Messages name parameters in the sweep's caller's words."""
    never_fork()  # a worker has threads of its own: a forked child could inherit a held lock
    with tempfile.TemporaryDirectory(prefix="mnc-sweep-") as tmp, wording(words):
        copies = {role: str(_materialise(files, Path(tmp, "in", role, name))) for role, (name, files) in inputs.items()}
        local = replace(
            shared,
            spec=copies["spec"],
            weights=copies.get("weights", shared.weights),
            calib=copies.get("calib", shared.calib),
            calib_name=shared.calib,
            target_options={**shared.target_options, **({"labels": copies["labels"]} if "labels" in copies else {})},
        )
        record, result = _compile(local, variant, Path(tmp, "out"))
        if record["exit_code"] != 0:  # its message names the user's files, not these copies
            for role, copy in copies.items():
                original = shared.target_options["labels"] if role == "labels" else getattr(shared, role)
                record["error"] = record["error"].replace(copy, str(original))
            return record, {}
        artifact = Path(record["artifact"])
        companions = get_target(variant.target).companions(artifact)
        if result.typed.artifact.anchors is not None:  # the SSD default boxes, written beside it by compile_spec
            companions.append(Path(result.typed.artifact.anchors))
        return record, {
            "artifact": _files(artifact),
            "companions": {p.name: p.read_bytes() for p in companions},
            "report": result.typed,
        }


def _install_remote(shared: Shared, variant: Variant, record: dict, files: dict, out_dir: Path) -> dict:
    """Put a remote build in place here, its report's paths made the ones a local build writes."""
    if record["exit_code"] != 0:
        return record
    name = Path(record["artifact"]).name
    destination = out_dir / variant.folder / name
    report: Report = files["report"]
    weights = report.weights if report.weights.file is None else replace(report.weights, file=shared.weights)
    anchors = report.artifact.anchors
    report = replace(
        report,
        artifact=replace(
            report.artifact,
            path=str(destination),
            anchors=None if anchors is None else str(destination.with_name(Path(anchors).name)),
        ),
        spec=replace(report.spec, path=shared.spec),
        weights=weights,
    )
    with staged(destination) as tmp:
        _materialise(files["artifact"], tmp)
        companions = [_materialise({"": data}, tmp.parent / n) for n, data in files["companions"].items()]
        report_path = destination.with_name(name + REPORT_SUFFIX)
        publish(tmp, destination, report_path, report_bytes(report.as_dict()), companions)
    return {**record, "artifact": str(destination), "report": str(report_path)}


def _run_cluster(
    shared: Shared, variants: list[Variant], out_dir: Path, address: str, words: Wording, done: Callable
) -> None:
    try:
        from distributed import Client
        from distributed import as_completed as completed
    except ImportError:
        raise InputError(
            f"{param('cluster')} needs Dask's distributed scheduler client: pip install 'mnc[cluster]'"
        ) from None
    inputs = _inputs(shared)
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"{param('cluster', address)}: cannot reach a Dask scheduler there ({exc})") from None
    with client:
        [shipped] = client.scatter([inputs], broadcast=True)
        futures = {client.submit(remote_compile, shared, shipped, v, words, pure=False): v for v in variants}
        for future in completed(futures):
            variant = futures[future]
            try:
                record, files = future.result()
            except Exception as exc:  # the worker died or could not import mnc
                failure = f"the Dask task failed: {type(exc).__name__}: {exc}"
                done(variant, _record(variant, EXIT_INTERNAL, 0.0, failure))
                continue
            done(variant, _install_remote(shared, variant, record, files, out_dir))


# ---- the sweep -----------------------------------------------------------------------------------


@dataclass
class SweepResult:
    records: list[dict]  # in grid order
    files: list[Path]  # sweep.csv, sweep.json and the plots written
    notes: list[str]  # what the user should know (a plot not drawn, latency not measured)

    @property
    def exit_code(self) -> int:
        """0 if every variant passed, else the worst exit code of the variants."""
        return max((r["exit_code"] for r in self.records), default=0)


def sweep(
    shared: Shared,
    variants: list[Variant],
    out_dir: str | Path = "sweep",
    *,
    jobs: int | None = None,
    cluster: str | None = None,
    measure: bool = False,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 100,
    progress: Callable[[Variant, dict, int, int], None] | None = None,
    plot: bool = True,
) -> SweepResult:
    """Build every variant, then (with measure) time each that passed, then write the table and
    the plots. progress(variant, record, done, total) is called as each build ends.

    Local builds run in worker processes; where this process cannot fork (it has run ONNX Runtime
    already, as after mnc.compile) they are spawned, and Python then imports the calling script
    in each worker: a script must call sweep() under `if __name__ == "__main__":`."""
    if not variants:
        raise InputError("the sweep has no variants")
    for name in shared.target_options:
        if not any(name in TARGETS[v.target].choices for v in variants):
            takers = [t for t in TARGETS if name in TARGETS[t].choices]
            raise InputError(f"{param(name)}: no target of this sweep takes it (only {', '.join(takers)})")
    if jobs is not None and jobs < 1:
        raise InputError(f"{param('jobs', jobs)}: at least 1")
    if any(v.quantize for v in variants) and shared.calib is None:
        where = param("calib", metavar="FOLDER|FILE.npy|FILE.npz|synthetic")
        raise InputError(f"{param('quantize', 'int8')} needs calibration data: {where}")
    load_spec(shared.spec)  # a spec that cannot be read is one error, not one per variant
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"cannot write into '{out}': it is a file, not a folder")
    results: dict[Variant, dict] = {}

    def finished(variant: Variant, record: dict) -> None:
        results[variant] = record
        if progress:
            progress(variant, record, len(results), len(variants))

    try:
        if cluster:
            _run_cluster(shared, variants, out, cluster, current_wording(), finished)
        else:
            _run_local(shared, variants, out, jobs or default_jobs(), current_wording(), finished)
    except BaseException:  # interrupted: the variants done stay, the workers' half-built ones go
        for folder in {out / v.folder for v in variants}:
            if folder.is_dir():
                remove_stale_staging(folder)
        raise
    records = [results[v] for v in variants]
    notes = []
    files = _write_tables(records, out, shared)  # now, so that a stop while timing keeps them
    if measure:
        notes += _measure(records, threads, warmup, runs)
        files = _write_tables(records, out, shared)
    if plot:
        try:
            from mnc.plot import plot_sweep
        except ImportError:
            notes.append("no plot: matplotlib is not installed (pip install 'mnc[plot]')")
        else:
            files += plot_sweep(records, out, title=f"{Path(shared.spec).stem}: {cpu_line()}")
    return SweepResult(records, files, notes)


def _measure(records: list[dict], threads: int, warmup: int, runs: int) -> list[str]:
    """Time every artifact that passed, one at a time, here; a runtime this host lacks is a note."""
    untimed: dict[str, list[str]] = {}
    for record in records:
        if record["exit_code"] != 0:
            continue
        try:
            latency = bench(record["artifact"], threads=threads, warmup=warmup, runs=runs)
        except InputError as exc:
            reason = exc.diagnostics[0].message.replace(f"'{record['artifact']}': ", "")
            untimed.setdefault(reason, []).append(Path(record["artifact"]).name)
            continue
        record.update(
            latency_ms=latency.median_ms,
            latency_p10_ms=latency.p10_ms,
            latency_p90_ms=latency.p90_ms,
            latency_min_ms=latency.min_ms,
            threads=latency.threads,
            runtime=latency.runtime,
        )
    return [f"latency not measured for {', '.join(names)}: {reason}" for reason, names in untimed.items()]


def _write_tables(records: list[dict], out: Path, shared: Shared) -> list[Path]:
    name, flags = cpu()
    document = {
        "mnc_version": __version__,
        "spec": shared.spec,
        "machine": {"cpu": name, "cpu_flags": flags, "python": sys.version.split()[0]},
        "fields": list(FIELDS),
        "variants": records,
    }
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)
    written = [out / "sweep.csv", out / "sweep.json"]
    write_atomic(written[0], text.getvalue().encode())
    write_atomic(written[1], (json.dumps(document, indent=2) + "\n").encode())
    return written
