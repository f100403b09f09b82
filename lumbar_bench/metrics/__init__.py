"""Metrics: the official score, classification metrics and Dice."""
