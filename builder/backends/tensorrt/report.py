"""A Jetson's words on the report's line of the machine a benchmark ran on: its L4T release and power mode."""

from __future__ import annotations

from builder import report
from builder.backends.tensorrt.facts import JetsonFacts
from builder.records import DeviceFacts


def jetson_words(device: DeviceFacts) -> list[str]:
    facts = (device.extra or {}).get("tensorrt")
    if not isinstance(facts, JetsonFacts):
        return []
    return [word for word in (facts.l4t and f"L4T {facts.l4t}", facts.jetson_power_mode) if word]


report.register_device_words(jetson_words)
