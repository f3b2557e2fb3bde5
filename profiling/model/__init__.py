"""The profile encoder and its input format (PyTorch only, no Spark)."""
