"""The ForgeLLM web app: Flask + Flask-SocketIO, REST API and a single-page front-end.

Kept free of heavy imports (no torch, no mlx) so the page is usable within a second.
"""
