"""labelloop: an active-learning annotation server, wire-compatible with the MONAI Label REST API."""

__version__ = "0.1.0"
