"""The coordinator's I/O: WebSocket connections, the client registry, the HTTP API and the composition root."""
