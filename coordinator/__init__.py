"""Pollen coordinator: federated learning for browser clients, driven by Flower strategies."""

__version__ = "0.1.0"
