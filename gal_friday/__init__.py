"""Gal-Friday: automated trading on Kraken."""

__version__ = "0.1.0"
