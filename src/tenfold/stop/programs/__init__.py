"""Seed programs for STOP's tasks (text read by tenfold.stop; never imported)."""
