"""Pairs stage."""
