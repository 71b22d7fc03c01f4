"""The report beside every artifact against its schema: the dataclasses of mnc/pipeline/report.py
and their description in docs/report.md."""

import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest

import mnc
from mnc.pipeline import report as schema

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DOC = (ROOT / "docs" / "report.md").read_text()
DOCUMENTED = set(re.findall(r"`([a-z_0-9<>]+)`", DOC))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    float_build = mnc.compile(
        SPECS / "v1.mnet", alpha=0.25, resolution=32, out_dir=out, save_weights=out / "w.safetensors"
    )
    int8_build = mnc.compile(
        SPECS / "v1.mnet", alpha=0.25, resolution=32, out_dir=out / "int8", quantize="int8", calib="synthetic",
        calib_samples=4,
    )  # fmt: skip
    return [float_build, int8_build]


def _sections(cls) -> dict[str, type]:
    """The fields of a report dataclass that are themselves report dataclasses (or lists of them)."""
    hints = typing.get_type_hints(cls, vars(schema))
    found = {}
    for f in dataclasses.fields(cls):
        for kind in [hints[f.name], *typing.get_args(hints[f.name])]:
            for inner in [kind, *typing.get_args(kind)]:
                if dataclasses.is_dataclass(inner) and inner.__module__ == schema.__name__:
                    found[f.name] = inner
    return found


def _check_keys(cls, value: dict, where: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    keys = list(value)
    if cls is schema.Report:
        keys = ["target_section" if k == value["target"] else k for k in keys]
    required = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("optional")]
    assert [k for k in names if k in keys] == keys, f"{where}: keys {keys} are not fields of {cls.__name__}, in order"
    assert set(required) <= set(keys), f"{where}: missing {set(required) - set(keys)}"
    for name, inner in _sections(cls).items():
        if name in value and name != "verification":
            items = value[name] if isinstance(value[name], list) else [value[name]]
            for i, item in enumerate(items):
                _check_keys(inner, item, f"{where}/{name}[{i}]")


def test_a_report_is_its_dataclasses_and_carries_its_schema_version(reports):
    for result in reports:
        written = json.loads(result.report_path.read_text())
        assert written == json.loads(json.dumps(result.report)) == json.loads(json.dumps(result.typed.as_dict()))
        assert written["schema_version"] == schema.SCHEMA_VERSION == 1
        _check_keys(schema.Report, written, result.artifact.name)
    float_report, int8_report = (r.typed for r in reports)
    assert float_report.quantization is None and int8_report.quantization.synthetic
    assert float_report.weights.saved_to.endswith("w.safetensors")


def test_docs_name_every_field_of_the_report(reports):
    classes = [c for c in vars(schema).values() if dataclasses.is_dataclass(c) and c.__module__ == schema.__name__]
    assert {c.__name__ for c in classes} >= {"Report", "SpecSource", "WeightsSource", "ArtifactFile", "Verified"}
    for cls in classes:
        missing = {f.name for f in dataclasses.fields(cls)} - DOCUMENTED
        assert not missing, f"docs/report.md does not name {cls.__name__}'s {missing}"
        assert f"`{cls.__name__}`" in DOC
    for result in reports:
        written = result.report
        verification = written["verification"]
        checks = {c.name for c in result.typed.verification.checks}
        undocumented = {k for k in verification if k not in checks} - DOCUMENTED
        assert not undocumented, f"docs/report.md does not name verification's {undocumented}"
        for section in (written["passes"][0], written["artifact"], written.get("quantization") or {}):
            assert set(section) <= DOCUMENTED
        assert set(written[written["target"]]) <= DOCUMENTED


def test_verify_json_is_the_verification_with_what_it_was_rebuilt_from(reports):
    verified = mnc.verify(reports[0].artifact)
    first = [k for k in verified if k not in reports[0].report["verification"]]
    assert first == [f.name for f in dataclasses.fields(schema.Verified) if f.name != "verification"]
    assert verified["spec"]["matches_artifact"] and verified["verdict"] == "pass"
    assert verified["weights"] == {k: v for k, v in reports[0].report["weights"].items() if k != "saved_to"}
