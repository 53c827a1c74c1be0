"""Runners execute a plan's stages: in this Python (local) or in toolchain/device images (docker)."""
