"""torchslim: make trained PyTorch models smaller and faster, and prove it with numbers."""

__version__ = "0.1.0"
