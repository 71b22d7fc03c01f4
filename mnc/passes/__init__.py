"""Optimisation passes. Importing mnc.passes.manager registers them all."""
