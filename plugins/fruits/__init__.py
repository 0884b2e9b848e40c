"""Helpers for the fruits_pipeline DAG (importable from Airflow's plugins folder)."""
