"""Celery settings of Airflow's workers: Airflow's defaults, plus TFX imported once when a worker starts.

    AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=pipeline.celery_config.CELERY_CONFIG

A Celery worker forks a process per task, and Airflow forks again to run it (execute_tasks_new_python_interpreter
is off by default), so whatever the worker imported at start is already imported in every task. Without this, each
of the pipeline's tasks imports TFX, TensorFlow, Beam, TFT, TFMA and TFDV again: 15-20 s per task on this machine,
more than most nodes' own work on small data. Celery imports the modules named in `imports` in the worker's main
process, before it starts its pool; the scheduler, which also reads this configuration to send tasks, never imports
them (this module itself is light).

`worker_hostname` names the worker that ran a task when several workers share a host (below).
"""
from __future__ import annotations

import os
import socket

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

WORKER_NAME_ENV = "FRAUD_AIRFLOW_WORKER_NAME"

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG,
                 "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), "pipeline.worker_preload")}


def worker_hostname() -> str:
    """Airflow's [core] hostname_callable for `make airflow`'s workers: the Celery worker's name (worker1@HOST,
    from FRAUD_AIRFLOW_WORKER_NAME) when several run on one host, so that each task instance records which worker
    ran it (the UI's and the REST API's `hostname`); the host's name everywhere else."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()
