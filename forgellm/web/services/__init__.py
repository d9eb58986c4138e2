"""Long-lived pieces of the web app: run files, training processes, the live metrics stream."""
