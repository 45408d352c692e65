"""The domain library: the ground floor of the project. It imports only `fraud.*` and third-party packages;
everything else (components, the trainer and transform modules, the pipeline, serving, the CLI) imports it.

Names       features (every column, feature, signature, metric, artifact property, split folder and file name)
Basics      errors (one hierarchy, the exit codes), timeutil (Lima time), atomic (crash-safe writes),
            examples (the tf.Example codec), settings (typed settings and the one loader)
Data        sources (CSV folder or database), ingest (the data contract), sql_source (point-in-time reader),
            behaviour (behavioural features, offline and online), validation (TFDV anomalies and drift)
Model       export (SavedModel and signatures), warmup (TF Serving warm-up records), threshold (the alert-budget
            operating threshold), eval_config and tfma_metrics (TFMA), scoring (backtests)
Runs        runs (the one ML Metadata reader: what a run did), report/ (the HTML evaluation report)
Synthetic   synth/ (the data generator and the database writer; never imported by the production readers)
The layering is checked by tests/unit/test_layering.py; `python3 scripts/import_graph.py` prints it.
"""
