"""The harness: probe, models, clips, engines, matrix runner, reports, gate."""
