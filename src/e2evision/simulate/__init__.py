"""Simulators that write the community's public formats (see docs/simulation.md)."""
