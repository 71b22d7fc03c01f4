import textwrap
from pathlib import Path

import pytest

from mnc.errors import MncError
from mnc.frontend import load_spec_text

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"

# A small valid spec that the error tests mutate one line at a time.
TINY = textwrap.dedent("""\
    name = tiny
    input_channels = 3
    base_resolution = 32
    classes = 10
    activation = relu6
    width_rounding = make_divisible(divisor=8)
    padding = same

    | operator       | t | c  | n | s |
    |----------------|---|----|---|---|
    | conv2d 3x3     | - | 16 | 1 | 2 |
    | bottleneck     | 6 | 24 | 2 | 2 |
    | avgpool global |   |    |   |   |
    | fc             |   | k  |   |   |
    """)


def replace_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


def spec_errors(text: str, path: str = "test.mnet") -> list:
    with pytest.raises(MncError) as info:
        load_spec_text(text, path)
    return info.value.diagnostics


@pytest.fixture
def tiny_text() -> str:
    return TINY


def fp16_verifier(artifact, target, spec, alpha: float, resolution: int):
    """(the IR an fp16 artifact was emitted from, verify(graph): the artifact's fp16 verification run
    against that IR), for tests that move one layer's weights and expect verification to see it."""
    from mnc.passes.manager import resolve_pipeline, run_pipeline
    from mnc.pipeline import build
    from mnc.verification.check import verify_float

    built = build(spec, alpha=alpha, resolution=resolution)
    emitted, _ = run_pipeline(built.graph, resolve_pipeline("default"))

    def verify(graph):
        settings = built.spec.settings
        return verify_float(artifact, target, built.graph, settings, resolution, 0, precision="fp16", emitted=graph)

    return emitted, verify


def taking(spec: Path, out: Path, conventions: dict) -> Path:
    """A copy of a spec that takes a weight source's conventions as a user would: a setting the spec
    states otherwise is stated as the source's where the spec must state it (padding, activation) and
    left out where it may be (batch-norm ε, mean, std: the source's value is then used and reported)."""
    from mnc.frontend import load_spec
    from mnc.frontend.settings import FIELDS

    settings = load_spec(spec).settings
    lines = spec.read_text().splitlines()
    for key, value in conventions.items():
        if getattr(settings, key) == value:
            continue
        text = (
            ", ".join(f"{v:g}" for v in value)
            if isinstance(value, tuple)
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
        )
        at = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == key and "=" in line]
        if FIELDS[key].required:
            lines[at[0]] = f"{key:<16}= {text}"
        elif at:
            del lines[at[0]]
    out.mkdir(parents=True, exist_ok=True)
    path = out / spec.name
    path.write_text("\n".join(lines) + "\n")
    return path
