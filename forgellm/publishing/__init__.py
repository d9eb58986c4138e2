"""Fuse, quantise, publish and convert trained models and adapters."""
