"""The test double of the event recorder the controllers write Events to (what
``ccm.controllers.failures.Recorder`` asks of ``ccm.kube.events.EventRecorder``): it keeps every
Event as ``(object name, type, reason, message)``, in order.

One double for every controller test. Provider authors do not need it (the testing kit's control
plane records real Events), so it lives with the tests rather than in ``ccm.testing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ccm import wellknown

__all__ = ["Recorder"]


@dataclass
class Recorder:
    """Records Events instead of sending them."""

    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    def event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], event_type, reason, message))

    def reasons(self, name: str | None = None) -> list[str]:
        """The reasons of the Events recorded (on the object ``name`` only, when given)."""
        return [e[2] for e in self.events if name is None or e[0] == name]

    def messages(self, reason: str) -> list[str]:
        """The messages of the Events recorded with ``reason``."""
        return [e[3] for e in self.events if e[2] == reason]

    def warnings(self, name: str, since: int = 0) -> list[tuple[str, str]]:
        """``(reason, message)`` of the Warning Events on ``name`` from the ``since``-th Event."""
        return [
            (reason, message)
            for who, kind, reason, message in self.events[since:]
            if who == name and kind == wellknown.EVENT_WARNING
        ]
