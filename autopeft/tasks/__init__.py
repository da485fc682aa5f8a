"""Tasks: what a task is (spec), the built-in ones (registry), the user's own (custom), and metrics."""
