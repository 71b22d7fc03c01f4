"""mnc: compile MobileNet-style network specs into verified mobile models.

The Python API (mnc/api.py, mnc/variants.py), loaded on first use so that `import mnc` stays light:
mnc.compile, mnc.verify, mnc.summary, mnc.bench, and mnc.sweep with mnc.Shared, mnc.Variant, mnc.grid.
"""

from mnc.version import __version__

_API = {
    "compile": "mnc.api",
    "verify": "mnc.api",
    "summary": "mnc.api",
    "bench": "mnc.api",
    "sweep": "mnc.variants",
    "grid": "mnc.variants",
    "Shared": "mnc.variants",
    "Variant": "mnc.variants",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'mnc' has no attribute '{name}'")
