"""Imported once by each Airflow Celery worker at start (pipeline/celery_config.py): what a task of the pipeline's
DAG would import, so that the tasks the worker forks start with it (copy-on-write, shared)."""
import logging

import apache_beam  # noqa: F401
import tensorflow  # noqa: F401
import tensorflow_data_validation  # noqa: F401
import tensorflow_model_analysis  # noqa: F401
import tensorflow_transform  # noqa: F401
from tfx.dsl.compiler import compiler  # noqa: F401
from tfx.orchestration.local import runner_utils  # noqa: F401
from tfx.orchestration.portable import launcher  # noqa: F401

import pipeline.definition  # noqa: F401  (the components, hence TFX's executors)

logging.getLogger(__name__).info("TFX and the pipeline's components imported; tasks forked from here start with them")
