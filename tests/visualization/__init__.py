"""Tests of hpa.visualization and the show/report commands."""
