"""Cluster mode: what role processes share to find, trust and talk to each other."""
