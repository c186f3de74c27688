"""Curate stage."""
