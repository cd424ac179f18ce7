"""The one dispatch path: every model call reaches a replica through `Dispatcher.send`."""

from runtime.dispatch.dispatcher import Call, Dispatcher, Pin
from runtime.dispatch.limits import Limiter, Limits, Principal
from runtime.dispatch.metrics import Metrics

__all__ = ["Call", "Dispatcher", "Limiter", "Limits", "Metrics", "Pin", "Principal"]
