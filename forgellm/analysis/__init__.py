"""Run analysis (best checkpoint, recommendations) and dashboards."""
