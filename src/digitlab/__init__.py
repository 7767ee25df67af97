"""digitlab: a lab for handwritten digits (MNIST)."""

__version__ = "0.1.0"
