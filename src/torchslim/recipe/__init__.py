"""Compression recipes: YAML schedules (Distiller format included) mapped onto the Python API."""
