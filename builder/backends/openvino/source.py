"""An IR given as the source: is it quantized already? Read from its .xml, without OpenVINO."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from builder.stage.source_precision import SourcePrecision, reader


@reader("openvino")
def quantization(path: Path) -> SourcePrecision | None:
    layers = Counter(layer.get("type") for layer in ET.parse(path).getroot().iter("layer"))
    if layers["FakeQuantize"]:
        return SourcePrecision(precision="int8", evidence=f"{layers['FakeQuantize']} FakeQuantize")
    return None
