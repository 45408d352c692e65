"""`fraudctl`, the command line: one click group (fraudctl.main), one module per command group.

    fraudctl generate        fraudctl.generate      synthetic data (CSV, optionally SQLite)
    fraudctl pipeline run    fraudctl.pipeline_run  the TFX pipeline with LocalDagRunner
    fraudctl report          fraudctl.report        the HTML evaluation report of a past run
    fraudctl score           fraudctl.score         batch scoring for backtests
    fraudctl serve           fraudctl.serve         the local TF-Serving-compatible server

The top of the dependency graph: it may import everything below it (fraud, pipeline, serving), nothing imports
it. Commands import heavy libraries (TFX, TensorFlow) only when they run, so `fraudctl --help` stays fast.
"""
