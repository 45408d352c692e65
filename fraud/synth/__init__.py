"""Synthetic data: the generator of labelled transactions (`datagen`) and the writer of the same data as
normalized database tables with profile history (`database`). Used by `fraudctl generate`, the demo, the
tests and the benchmarks; the production readers (fraud.ingest, fraud.sql_source) never import it."""
