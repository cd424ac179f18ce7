"""The control protocol spoken over the node WebSocket."""
