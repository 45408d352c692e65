"""Throughput of the behavioural-feature Beam job (components/behaviour.py) at 100k and 1M rows.

    .venv/bin/python bench/features_bench.py [--sizes 100000 1000000] [--beam-arg=...]

Data: the generator, sized to about N rows, ingested into tf.Examples as the pipeline does. The reference,
measured in the same run on the same rows, is the in-memory computation (fraud.behaviour.compute_offline,
one process, no Beam): the ratio says what Beam's grouping, serialisation and workers cost or save here.
"""
import argparse
import os
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from components import behaviour as component
from components.ingestion import write_split
from fraud import behaviour, ingest
from fraud import features as F
from fraud import synth
from fraud.synth import datagen
from fraud.settings import DEFAULT_BEAM_ARGS



def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--beam-arg", action="append", default=None)
    args = parser.parse_args()
    beam_args = args.beam_arg or list(DEFAULT_BEAM_ARGS)
    print(f"Beam args: {' '.join(beam_args)}")
    print(f"{'rows':>9} {'beam s':>8} {'beam rows/s':>12} {'in-memory rows/s':>17} {'beam/in-memory':>15}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            days = 180
            users = max(50, int(size / (synth.ROWS_PER_CARD_DAY * days)))
            datagen.generate(os.path.join(tmp, "csv"), days=days, users=users, seed=1)
            frame = ingest.standardise(ingest.read_csv_dir(os.path.join(tmp, "csv")), require_label=True).frame
            write_split(frame, F.split_dir(os.path.join(tmp, "examples"), "all"))
            rows = len(frame)

            started = time.perf_counter()
            behaviour.compute_columns(behaviour.columns_of_frame(frame))
            in_memory = time.perf_counter() - started

            started = time.perf_counter()
            with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
                component.build(p, {"all": os.path.join(F.split_dir(os.path.join(tmp, "examples"), "all"), "*")},
                                os.path.join(tmp, "out"), label_delay_days=F.LABEL_DELAY_DAYS)
            beam_s = time.perf_counter() - started
        print(f"{rows:>9} {beam_s:>8.1f} {rows / beam_s:>12.0f} {rows / in_memory:>17.0f} "
              f"{in_memory / beam_s:>15.2f}", flush=True)


if __name__ == "__main__":
    main()
