"""Measurements that print their figures (never timed tests)."""
