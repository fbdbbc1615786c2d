"""dvm: measure local speech-to-text on this machine, then serve the best configuration."""

__version__ = "0.1.0"
