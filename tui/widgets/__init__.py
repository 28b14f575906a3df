"""Widgets of the panel."""
