"""What runs inside a stage: in a toolchain or device image, or in the local runner's subprocess. `execute` runs a
plan's calls of one stage; the steps, runtimes, converters and measurements it calls live here. Nothing here imports
builder.host (tests/test_architecture.py holds that), so an image needs only this, the shared modules of builder/
and the backends' own modules."""
