"""The Quart-Trio HTTP/WebSocket app and the hypercorn server that runs it."""
