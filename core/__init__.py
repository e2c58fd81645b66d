"""RLHF Studio core: all logic, no UI code."""
__version__ = "0.1.0"
