"""Coordination backends."""
