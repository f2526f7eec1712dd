"""paperwire: personalised research-paper alerts as a streaming pipeline."""

__version__ = "0.1.0"
