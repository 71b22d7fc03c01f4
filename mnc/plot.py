"""The sweep's picture (matplotlib, the optional `mnc[plot]` extra): the MobileNet papers' trade-off.
Left, computation against measured latency (V1 Figure 4's axes with latency for accuracy); right,
parameters against the artifact's size in bytes (what precision and quantisation buy). Log axes;
one series per target, precision and α; each point labelled with its resolution."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure  # the object API: no pyplot state, no window, no backend to choose
from matplotlib.ticker import FuncFormatter

from mnc.io import write_atomic

MARKERS = "osD^v<>pPX*h"
LINES = ("-", "--", ":", "-.")


def _kind(r: dict) -> str:
    return " ".join(p for p in (r["target"], r["precision"], r["quantize"]) if p)


def _groups(records: list[dict], key) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["exit_code"] == 0:
            groups[key(r)].append(r)
    return dict(groups)


def _plain_ticks(axes) -> None:
    """Log axes with numbers as numbers (0.5, 20), not powers of ten."""
    formatter = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(formatter)
        axis.set_minor_formatter(formatter)
    axes.tick_params(which="minor", labelsize=7)


def plot_sweep(records: list[dict], out: Path, title: str) -> list[Path]:
    """Write out/sweep.png and out/sweep.svg; returns their paths."""
    series = _groups(records, lambda r: f"{_kind(r)} α={r['alpha']:g}")
    kinds = _groups(records, _kind)
    # One colour per α, one marker and line style per target (and precision): a family reads as one colour.
    marker = {kind: MARKERS[i % len(MARKERS)] for i, kind in enumerate(kinds)}
    line_style = {kind: LINES[i % len(LINES)] for i, kind in enumerate(kinds)}
    alphas = sorted({r["alpha"] for group in kinds.values() for r in group}, reverse=True)
    colour = {a: f"C{i % 10}" for i, a in enumerate(alphas)}
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    latency_axes, size_axes = figure.subplots(1, 2)
    timed = [r for group in series.values() for r in group if r["latency_ms"] is not None]
    for label, group in series.items():
        points = sorted((r for r in group if r["latency_ms"] is not None), key=lambda r: r["macs"])
        if not points:
            continue
        kind = _kind(points[0])
        (line,) = latency_axes.plot(
            [r["macs"] / 1e6 for r in points],
            [r["latency_ms"] for r in points],
            marker=marker[kind],
            linestyle=line_style[kind],
            color=colour[points[0]["alpha"]],
            label=label,
        )
        for r in points:
            latency_axes.annotate(
                str(r["resolution"]),
                (r["macs"] / 1e6, r["latency_ms"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=line.get_color(),
            )
    if timed:
        latency_axes.set(xscale="log", yscale="log", xlabel="million multiply-adds", ylabel="median latency (ms)")
        latency_axes.set_title("computation against latency (labels: resolution)", fontsize=10)
        latency_axes.grid(True, which="both", alpha=0.3)
        latency_axes.legend(fontsize=7)
        _plain_ticks(latency_axes)
    else:
        latency_axes.set_axis_off()
        latency_axes.text(0.5, 0.5, "latency not measured: run the sweep with --bench", ha="center", va="center")
    for kind, group in kinds.items():
        by_alpha = {r["alpha"]: r for r in group}  # resolution changes neither parameters nor size
        points = [by_alpha[a] for a in sorted(by_alpha)]
        size_axes.plot(
            [r["params"] / 1e6 for r in points],
            [r["size_bytes"] / 1e6 for r in points],
            marker=marker[kind],
            linestyle=line_style[kind],
            color="0.4",
            markerfacecolor="none",
            label=kind,
        )
        for r in points:
            size_axes.annotate(
                f"α {r['alpha']:g}",
                (r["params"] / 1e6, r["size_bytes"] / 1e6),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
                color=colour[r["alpha"]],
            )
    if kinds:
        size_axes.set(xscale="log", yscale="log", xlabel="million parameters", ylabel="artifact size (MB)")
        size_axes.grid(True, which="both", alpha=0.3)
        size_axes.legend(fontsize=7)
        _plain_ticks(size_axes)
    size_axes.set_title("parameters against artifact size (labels: α)", fontsize=10)
    figure.suptitle(title, fontsize=10)
    written = []
    for suffix, extra in ((".png", {"dpi": 110}), (".svg", {"metadata": {"Date": None}})):
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "mnc"}):  # no random ids: the same sweep, the same file
            figure.savefig(buffer, format=suffix[1:], **extra)
        path = out / f"sweep{suffix}"
        write_atomic(path, buffer.getvalue())
        written.append(path)
    return written


def _finite(sqnr: float) -> float:
    """An exact layer's SQNR is infinite: left out of the line."""
    return float("nan") if sqnr == float("inf") else sqnr


def plot_layer_errors(errors, out: Path, title: str) -> Path:
    """Each quantised layer's SQNR against fp32, alone and in the int8 network (mnc/quant/debug.py),
    as a PNG at `out`: where the two lines part is where error accumulates, a dip of the first is a
    layer int8 itself serves badly."""
    figure = Figure(figsize=(max(8, 0.16 * len(errors)), 5), layout="constrained")
    axes = figure.subplots()
    x = range(len(errors))
    axes.plot(x, [_finite(e.isolated_sqnr) for e in errors], marker=".", label="alone (fp32 inputs on their grids)")
    axes.plot(x, [_finite(e.propagated_sqnr) for e in errors], marker=".", label="in the int8 network")
    axes.set_xticks(list(x), [e.name for e in errors], rotation=90, fontsize=6)
    axes.set(ylabel="SQNR against fp32 (dB)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    write_atomic(out, buffer.getvalue())
    return out
