"""mnc's version, recorded in every artifact and report."""

__version__ = "0.1.0"
