"""Synthetic data: the generator of labelled transactions (`datagen`) and the writer of the same data as
normalized database tables with profile history (`database`). Used by `fraudctl generate`, the demo, the
tests and the benchmarks; the production readers (fraud.ingest, fraud.sql_source) never import it."""

import datetime as _dt

# The generator's defaults and limits, here so that `fraudctl generate --help` shows them without importing
# numpy and pandas (fraud.synth.datagen uses the same values).
DEFAULT_DAYS = 90
DEFAULT_USERS = 4000
DEFAULT_SEED = 42
DEFAULT_START = _dt.date(2026, 6, 1)
MIN_DAYS = 14  # the compromised-restaurant story needs a skimming window plus a 3-day delay
MIN_USERS = 50
# Rows per card per day the generator writes on its defaults (measured: 4,000 cards x 90 days -> 49,503 rows):
# how benchmarks size a data set of about N rows.
ROWS_PER_CARD_DAY = 49503 / (DEFAULT_USERS * DEFAULT_DAYS)
