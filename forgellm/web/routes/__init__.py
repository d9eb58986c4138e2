"""Blueprints of the web app, one per area of the REST API."""
