"""``losskit compare`` (being written)."""
