"""Mask sources and mask geometry."""
