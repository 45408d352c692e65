"""StatisticsGen: TFX's, with an executor that computes TFDV's statistics in this process (fraud.statistics).

Same component, inputs, outputs and artifact layout (`Split-<name>/FeatureStats.pb`, a DatasetFeatureStatisticsList,
plus the stock executor's properties), so ExampleValidator, the validation gate, the report and TFDV's tools read
it as before. The statistics of a million rows take about a tenth of the stock executor's time: the stock one spends
most of its time reading and decoding one record at a time in Beam's Python code (docs/scale.md).

The stock (Beam) executor still runs when the work belongs on Beam or needs what only it does:
- the pipeline's Beam arguments name a runner other than the DirectRunner (Dataflow, Flink, Spark: the data may be
  larger than one machine, and the runner spreads the work over workers);
- the component is given StatsOptions, a schema, per-split sample rates or a custom split pattern;
- the examples are not on a local file system, or not marked as this project's dense examples (every record
  holding every feature with one value: F.PROP_DENSE_EXAMPLES, set by FraudExampleGen and kept by the behavioural
  features).
"""
from __future__ import annotations

import logging
import os
import time

from tfx.components import StatisticsGen as TfxStatisticsGen
from tfx.components.statistics_gen import executor as tfx_executor
from tfx.dsl.components.base import executor_spec
from tfx.components.util import examples_utils
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as specs
from tfx.utils import io_utils, json_utils

from fraud import examples as X
from fraud import features as F
from fraud import statistics as S
from fraud.sources import is_url

log = logging.getLogger(__name__)


def distributed_runner(beam_pipeline_args) -> str:
    """The runner the Beam arguments name when it is not the local DirectRunner, else ""."""
    runner = ""
    args = list(beam_pipeline_args or [])
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(args):
            runner = args[i + 1]
    return "" if runner.lower() in ("", "directrunner", "direct") else runner


class Executor(tfx_executor.Executor):
    def _why_stock(self, input_dict, exec_properties, examples) -> str:
        runner = distributed_runner(self._beam_pipeline_args)
        if runner:
            return f"the Beam runner is {runner}"
        for key in (specs.STATS_OPTIONS_JSON_KEY, specs.SAMPLE_RATE_BY_SPLIT_KEY):
            if json_utils.loads(exec_properties.get(key) or "null"):
                return f"{key} is set"
        if input_dict.get(specs.SCHEMA_KEY):
            return "a schema is given"
        if examples.has_custom_property(examples_utils.CUSTOM_SPLIT_PATTERN_PROPERTY_NAME) or is_url(examples.uri):
            return "the examples are not plain local splits"
        if not (examples.has_custom_property(F.PROP_DENSE_EXAMPLES)
                and examples.get_int_custom_property(F.PROP_DENSE_EXAMPLES) == 1):
            return "the examples are not known to hold every feature in every record"
        return ""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        examples = artifact_utils.get_single_instance(input_dict[specs.EXAMPLES_KEY])
        why = self._why_stock(input_dict, exec_properties, examples)
        if why:
            log.info("StatisticsGen: TFDV on Beam (%s)", why)
            return super().Do(input_dict, output_dict, exec_properties)
        self._log_startup(input_dict, output_dict, exec_properties)
        exclude = json_utils.loads(exec_properties.get(specs.EXCLUDE_SPLITS_KEY) or "null") or []
        splits = [s for s in artifact_utils.decode_split_names(examples.split_names) if s not in exclude]
        statistics = artifact_utils.get_single_instance(output_dict[specs.STATISTICS_KEY])
        statistics.split_names = artifact_utils.encode_split_names(splits)
        statistics.span = examples.span
        statistics.set_json_value_custom_property(tfx_executor.SAMPLE_RATE_BY_SPLIT_PROPERTY_NAME,
                                                  json_utils.dumps({split: 1.0 for split in splits}))
        for split in splits:
            began = time.time()
            stats = S.split_statistics(X.split_files(examples.uri, split))
            out_dir = artifact_utils.get_split_uri([statistics], split)
            io_utils.write_bytes_file(os.path.join(out_dir, tfx_executor.DEFAULT_FILE_NAME),
                                      stats.SerializeToString())
            (dataset,) = stats.datasets  # one dataset: the split, unsliced
            print(f"statistics of {split}: {dataset.num_examples:,} rows, {len(dataset.features)} features in "
                  f"{time.time() - began:.1f} s (TFDV in process)", flush=True)


class StatisticsGen(TfxStatisticsGen):
    """TFX's StatisticsGen with the executor above (same inputs, outputs and parameters)."""
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
