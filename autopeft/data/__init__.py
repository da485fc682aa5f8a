"""Data: reading rows, checking them, carving splits, encoding, the token cache and the Lightning data module."""
