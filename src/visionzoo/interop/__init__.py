"""Converters from reference implementations' weights to visionzoo models."""
