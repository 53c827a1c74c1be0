"""Model architectures for weights that ship without code (recipe model factories)."""
