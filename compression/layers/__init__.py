"""Layers that compressed models are rebuilt from (allow-listed in formats.structure)."""
