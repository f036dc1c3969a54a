"""Bridges to other research libraries (imported on demand; each needs its own package)."""
