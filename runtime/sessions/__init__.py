"""Realtime sessions (seed 002): session API, per-session WebSocket, pinned replicas."""
