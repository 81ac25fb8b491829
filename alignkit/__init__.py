"""alignkit: align language models with preferences, and measure whether it worked."""

__version__ = "0.1.0"
