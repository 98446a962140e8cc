"""Run records (result.json, metrics.jsonl) and the optional W&B sink."""
