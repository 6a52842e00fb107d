"""The headless Python client: PyTorch training behind the same protocol the browser speaks."""
