"""The coordinator service: WebSocket sessions, the Flower grid over them, the run loop and the HTTP API."""
