"""Training: the Delta-native data feed, the DDP loop and the TorchDistributor launch."""
