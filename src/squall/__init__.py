"""Squall: a serverless functions platform that speaks the Apache OpenWhisk REST API."""

__version__ = "0.1.0"

__all__ = ["__version__"]
