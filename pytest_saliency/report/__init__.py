"""Rendering results: failure text, terminal summary table."""
