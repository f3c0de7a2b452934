"""HTTP resources: one class per route, responders a few lines (parse, ask, answer)."""
