"""Orchestration: create_pipeline() (definition.py, pure, no defaults of its own), the local runner and its
console progress, and the Airflow DAG with the settings and TFX launcher fixes it needs. Imports fraud.*,
components and TFX/Airflow; only the CLI imports it."""
