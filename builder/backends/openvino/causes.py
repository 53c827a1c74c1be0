"""What OpenVINO's converter says when it fails: its frames and summaries around the error, and the op it has
no translator or conversion rule for."""

from __future__ import annotations

from builder.stage import causes

causes.register(causes.ToolErrors(
    rules=(causes.Rule(r"No translator found for|No conversion rule found for", "unsupported-op",
                       causes.UNSUPPORTED_OP_HINT),),
    not_the_error=(
        r"Error in attempt \d|Check '.*' failed at |FrontEnd API failed with|Model wasn't fully converted|Summary:"
        r"|While validating|\[ONNX Frontend\] Conversion failed for|-- ",),
    op_names=(
        r"unsupported op ([\w./:-]+)",  # builder.backends.openvino.convert's own message
        r"No translator found for ([\w./:-]+) node",
        r"No conversion rule found for operations: ([\w./:-]+(?:, [\w./:-]+)*)",
    ),
))
