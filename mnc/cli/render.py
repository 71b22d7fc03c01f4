"""What the commands print: a compile's and a verify's results, progress on a terminal, the sweep table."""

from __future__ import annotations

import json
import sys


def print_compiled(result) -> None:
    """A compile that passed: the artifact, its int8 figures, each executor's errors, the checks."""
    r = result.report
    v = r["verification"]
    print(
        f"wrote {result.artifact} ({r['artifact']['size_bytes']:,} bytes; "
        f"{r['params']:,} params, {r['macs'] / 1e6:.1f} M MACs)"
    )
    if "quantization" in r:
        q, m, f = r["quantization"], v["metrics"], v["versus_fp32"]
        if q["synthetic"]:
            print(
                "warning: calibrated with synthetic data; the int8 ranges do not represent real inputs", file=sys.stderr
            )
        print(
            f"int8 ({q['calibration']}): against mnc's fake-quant reference SQNR {m['sqnr_db']} dB, cosine "
            f"{m['cosine']:.5f}; against fp32 SQNR {f['sqnr_db']} dB, top-1 agreement {_fraction(f['top1_agreement'])}"
            " (seeded synthetic images)"
        )
        own = f.get("on_calibration_images")
        if own is not None:
            print(
                f"int8 against fp32 on {own['samples']} of the calibration images: SQNR {own['sqnr_db']} dB, "
                f"cosine {own['cosine']:.5f}, top-1 agreement {_fraction(own['top1_agreement'])}"
            )
    for run in v.get("runs", []):
        m = run["metrics"]
        print(
            f"verified with {run['executor']}: max abs error {m['max_abs_err']:.3g}, max rel error "
            f"{m['max_rel_err']:.3g} ({_allowance(v, m)}), cosine {m['cosine']:.7f}"
        )
    _print_check_summaries(v)
    print(f"  reference: {v['reference']}")
    print(f"report: {result.report_path}")


def print_verified(artifact: str, result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{artifact}: pass (α={result['alpha']:g}, resolution {result['resolution']}, seed {result['seed']})")
        if "versus_fp32" in result:
            m = result["metrics"]
            print(f"  int8 against mnc's fake-quant reference: SQNR {m['sqnr_db']} dB, cosine {m['cosine']:.5f}")
        for run in result.get("runs", []):
            m = run["metrics"]
            print(
                f"  {run['executor']}: max abs error {m['max_abs_err']:.3g}, max rel error {m['max_rel_err']:.3g}, "
                f"cosine {m['cosine']:.7f}"
            )
        _print_check_summaries(result, indent="  ")
        if not result["spec"]["matches_artifact"]:
            print(f"note: {result['spec']['path']} differs from the spec the artifact was built from")


def _fraction(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _allowance(verification: dict, metrics: dict) -> str:
    if "exceedance" in metrics:  # fp32: the per-element bound derived from the computation
        return f"{metrics['exceedance']:.2f} of the rounding error derived for it"
    tolerance = verification["tolerance"]
    if "reported_max_rel_err" in tolerance:  # checked layer by layer; the whole network reported
        return "reported against the fp32 reference"
    return f"tolerance {tolerance['max_rel_err']:g}"


def _print_check_summaries(verification: dict, indent: str = "") -> None:
    for section in verification.values():
        if isinstance(section, dict) and "summary" in section:
            print(indent + section["summary"])
    if "constants" in verification:
        print(
            f"{indent}checked {verification['constants']['checked']} constants of the artifact: each equals the "
            "spec's weights after the declared rounding, bit for bit"
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
