"""What the commands print: a compile's and a verify's results, progress on a terminal, the sweep table."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mnc.errors import InputError

if TYPE_CHECKING:  # what the commands give these functions; loaded by the commands that make them
    from mnc.pipeline.compile import CompileResult
    from mnc.pipeline.report import Verified
    from mnc.verification.result import ExecutorRun, FloatVerification, Int8Verification


def print_compiled(result: CompileResult) -> None:
    """A compile that passed: the artifact, its int8 figures, each executor's errors, the checks."""
    r = result.typed
    v = r.verification
    print(f"wrote {result.artifact} ({r.artifact.size_bytes:,} bytes; {r.params:,} params, {r.macs / 1e6:.1f} M MACs)")
    if r.weights.file is not None:
        print(_weights_line(r.weights))
    if r.quantization is not None:
        q, m, f = r.quantization, v.versus_fake_quant, v.versus_fp32
        if q.synthetic:
            print(
                "warning: calibrated with synthetic data; the int8 ranges do not represent real inputs", file=sys.stderr
            )
        print(
            f"int8 ({q.calibration}): against mnc's fake-quant reference SQNR {m['sqnr_db']} dB, cosine "
            f"{m['cosine']:.5f}; against fp32 SQNR {f['sqnr_db']} dB, top-1 agreement {_fraction(f['top1_agreement'])}"
            " (seeded synthetic images)"
        )
        if q.equalization is not None:
            e = q.equalization
            print(
                f"equalisation: {e['channels']} channels of {e['layers']} layers scaled by powers of two before a "
                f"depthwise convolution (measured on {e['samples']} calibration samples)"
            )
        if q.bias_correction is not None:
            c = q.bias_correction
            print(
                f"bias correction: {c['layers']} layers, measured on {c['samples']} calibration samples (largest "
                f"mean shift taken off: {c['largest_shift_output_steps']} steps of the layer's output grid)"
            )
        if q.layers is not None:
            from mnc.quant.debug import worst

            named = ", ".join(f"{e['name']} ({e['isolated_sqnr']:.1f} dB)" for e in worst(q.layers["of"]))
            print(
                f"int8 loses most in: {named}: each layer's SQNR against fp32 alone, on {q.layers['samples']} "
                "calibration images (every layer: the report's quantization.layers, or mnc verify --layers)"
            )
        own = f.get("on_calibration_images")
        if own is not None:
            print(
                f"int8 against fp32 on {own['samples']} of the calibration images: SQNR {own['sqnr_db']} dB, "
                f"cosine {own['cosine']:.5f}, top-1 agreement {_fraction(own['top1_agreement'])}"
            )
    for run in _runs(v):
        c = run.comparison
        print(
            f"verified with {run.executor}: max abs error {c.max_abs_err:.3g}, max rel error "
            f"{c.max_rel_err:.3g} ({_allowance(v, run)}), cosine {c.cosine:.7f}"
        )
    _print_check_summaries(v)
    print(f"  reference: {v.reference}")
    print(f"report: {result.report_path}")


def print_verified(artifact: str, verified: Verified, as_json: bool) -> None:
    from mnc.verification.result import Int8Verification

    if as_json:
        print(json.dumps(verified.as_dict(), indent=2))
    else:
        v = verified.verification
        print(f"{artifact}: pass (α={verified.alpha:g}, resolution {verified.resolution}, seed {verified.seed})")
        if isinstance(v, Int8Verification):
            m = v.versus_fake_quant
            print(f"  int8 against mnc's fake-quant reference: SQNR {m['sqnr_db']} dB, cosine {m['cosine']:.5f}")
        for run in _runs(v):
            c = run.comparison
            print(
                f"  {run.executor}: max abs error {c.max_abs_err:.3g}, max rel error {c.max_rel_err:.3g}, "
                f"cosine {c.cosine:.7f}"
            )
        _print_check_summaries(v, indent="  ")
        if not verified.spec.matches_artifact:
            print(f"note: {verified.spec.path} differs from the spec the artifact was built from")


def _runs(verification: FloatVerification | Int8Verification) -> list[ExecutorRun]:
    """Each executor's run of a float artifact (an int8 one is compared as a whole, not run by run)."""
    from mnc.verification.result import FloatVerification

    return verification.runs if isinstance(verification, FloatVerification) else []


def _weights_line(weights) -> str:
    """Where the weights came from: the layout (how the file's tensors were matched with the layers),
    and the settings the spec left to the weights' framework."""
    how = "matched in order of computation" if weights.layout == "in_order" else f"layout '{weights.layout}'"
    line = f"weights: {weights.file} ({how})"
    if weights.conventions:
        taken = ", ".join(f"{k} = {_value(c['used'])}" for k, c in weights.conventions.items())
        line += f"; from their framework, where the spec states none: {taken}"
    return line


def _value(value) -> str:
    return (
        ", ".join(f"{v:g}" for v in value)
        if isinstance(value, (tuple, list))
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def _fraction(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _allowance(verification: FloatVerification, run: ExecutorRun) -> str:
    if run.exceedance is not None:  # fp32: the per-element bound derived from the computation
        return f"{run.reported_exceedance:.2f} of the rounding error derived for it"
    if verification.layered:  # checked layer by layer; the whole network reported
        return "reported against the fp32 reference"
    return f"tolerance {verification.tolerance.max_rel_err:g}"


def _print_check_summaries(verification: FloatVerification | Int8Verification, indent: str = "") -> None:
    for check in verification.checks:
        if check.summary:
            print(indent + check.summary)
    if verification.constants is not None:
        print(
            f"{indent}checked {verification.constants.as_dict()['checked']} constants of the artifact: each equals "
            "the spec's weights after the declared rounding, bit for bit"
        )


def progress(done: int, total: int) -> None:
    """A one-line progress bar on a terminal."""
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    print(
        f"\rcalibrating [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True
    )


def sweep_progress(total: int):
    """A progress bar on a terminal (tqdm); one plain line per variant otherwise (CI logs)."""
    if sys.stderr.isatty():
        import tqdm

        tqdm.tqdm.monitor_interval = 0  # no monitor thread
        bar = tqdm.tqdm(total=total, unit="variant", file=sys.stderr, dynamic_ncols=True)

        def update(variant, record: dict, done: int, total: int) -> None:
            bar.set_postfix_str(f"{record['artifact'] or variant.label()}: {record['verdict']}")
            bar.update(1)
            if done == total:
                bar.close()

        return update

    def line(variant, record: dict, done: int, total: int) -> None:
        print(
            f"[{done}/{total}] {record['artifact'] or variant.label()}: {record['verdict']} "
            f"({record['compile_s']:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
        if record["error"]:
            print("  " + record["error"].replace("\n", "\n  "), file=sys.stderr, flush=True)

    return line


def format_sweep(records: list[dict]) -> str:
    header = ("target", "precision", "α", "res", "params", "MACs", "bytes", "latency ms", "verdict")
    rows = [
        (
            r["target"] + (f" {r['quantize']}" if r["quantize"] else ""),
            r["precision"] or "",
            f"{r['alpha']:g}" if r["alpha"] is not None else "",
            str(r["resolution"] or ""),
            f"{r['params']:,}" if r["params"] is not None else "",
            f"{r['macs'] / 1e6:.1f} M" if r["macs"] is not None else "",
            f"{r['size_bytes']:,}" if r["size_bytes"] is not None else "",
            f"{r['latency_ms']:.3f}" if r["latency_ms"] is not None else "",
            r["verdict"],
        )
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    return "\n".join(
        "  ".join(c.rjust(w) if 2 <= i <= 7 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        for cells in [header, *rows]
    )


def fastest(records: list[dict]) -> list[str]:
    """For each network of the sweep (α, resolution) timed in more than one runtime: one line naming
    the fastest variant on this machine, and the others' medians."""
    networks: dict[tuple, list[dict]] = {}
    for r in records:
        if r["latency_ms"] is not None:
            networks.setdefault((r["alpha"], r["resolution"]), []).append(r)
    lines = []
    for (alpha, resolution), timed in networks.items():
        if len(timed) < 2:
            continue
        ranked = sorted(timed, key=lambda r: r["latency_ms"])
        name = [_variant(r) for r in ranked]
        others = ", ".join(f"{n} {r['latency_ms']:.3f}" for n, r in zip(name[1:], ranked[1:]))
        where = ", ".join(
            x for x in (f"α {alpha:g}" if alpha is not None else "", f"{resolution}px" if resolution else "") if x
        )
        lines.append(f"fastest{' at ' + where if where else ''}: {name[0]} {ranked[0]['latency_ms']:.3f} ms ({others})")
    return lines


def _variant(r: dict) -> str:
    return " ".join(x for x in (r["target"], r["precision"] or "", r["quantize"] or "") if x)


def print_layer_errors(errors, calib: str, as_json: bool) -> None:
    """The per-layer int8 table of `mnc verify --layers` (mnc/quant/debug.py)."""
    if as_json:
        print(json.dumps({"layers": [e.as_dict() for e in errors]}, indent=2))
        return
    print(f"int8 against fp32, layer by layer, on {calib} (SQNR in dB; alone: fed fp32 inputs on their grids)")
    print(f"  {'layer':32s} {'op':14s} {'alone':>7s} {'network':>8s} {'range':>22s} {'clipped':>8s}")
    for e in errors:
        span = f"[{e.low:.4g}, {e.high:.4g}]"
        print(
            f"  {e.name:32s} {e.op:14s} {e.isolated_sqnr:7.2f} {e.propagated_sqnr:8.2f} {span:>22s} "
            f"{100 * e.clipped:7.3f}%"
        )


def write_layer_plot(errors, path: str, title: str) -> str:
    try:
        from mnc.plot import plot_layer_errors
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'mnc[plot]'") from None
    return str(plot_layer_errors(errors, Path(path), title))
