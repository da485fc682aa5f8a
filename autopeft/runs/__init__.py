"""Run directories' durable records: the append-only results store and a search's front."""
