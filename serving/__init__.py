"""Serving the fraud model: configuration for the real TensorFlow Serving container (this folder's .config,
.yml files) and a local server that honours the same REST/gRPC contract (server.py), for development,
tests and CI where the `tensorflow_model_server` binary cannot be installed. See serving/README.md.

Kept free of imports: status_exporter.py and metrics.py run with the standard library only.
"""
