"""The fake fal server used by the tests and the benchmark."""

from .server import ENDPOINTS, FakeFal, Faults

__all__ = ["ENDPOINTS", "FakeFal", "Faults"]
