"""profiling: batch user profiles from behaviour, preference and social logs.

Spark validates the logs and builds one multidimensional event sequence per
user, a self-attention multi-interest encoder (PyTorch, trained with
TorchDistributor) turns each sequence into a profile, and the profiles land
in Delta tables tracked in MLflow.
"""

__version__ = "0.1.0"
