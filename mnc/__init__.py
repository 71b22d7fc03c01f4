"""mnc: compile MobileNet-style network specs into verified mobile models."""

__version__ = "0.1.0"
