"""Structured-config schemas and cross-field validation."""
