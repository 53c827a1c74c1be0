"""edge-builder: containerized, per-target builds of edge ML models."""

__version__ = "0.1.0"
