"""Small shared helpers (random draws, checks)."""
