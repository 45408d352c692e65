"""Pusher: TFX's Pusher with an atomic push to a file-system destination.

The stock executor copies the model into `<base>/<version>/` in place, `saved_model.pb` last. A crash or a full
disk in the middle leaves a numeric folder with a truncated model: TF Serving tries to load it (and the
load-failure alert fires until somebody deletes it), and a reader that takes "the newest version with a
saved_model.pb" takes the broken one. Here the model is copied into a hidden staging folder next to the version
(`.<version>.<random>.tmp`, which no model server reads as a version), every file is fsynced, and one rename
puts the complete version in place (fraud.atomic.publish_tree). Everything else is the stock executor's: the
blessing check, UNIX-time versions, skipping a version that already exists, the archive copy in the PushedModel
artifact and its `pushed` / `pushed_destination` / `pushed_version` properties.

A destination that is not a local path (gs://, s3://) has no atomic rename: the stock copy is used, and the
log says so.
"""
from __future__ import annotations

import logging
import os
import time

from tfx.components.pusher import component as tfx_pusher
from tfx.components.pusher import executor as tfx_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from fraud import atomic
from fraud.sources import is_url

log = logging.getLogger(__name__)

# A staging folder left by a push that was killed is removed by a later push once it is this old.
STALE_STAGING_S = 3600


class AtomicPushExecutor(tfx_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        base = destination.filesystem.base_directory if destination.WhichOneof("destination") == "filesystem" else ""
        if not base or is_url(base):
            log.warning("Push destination %r is not a local folder: using the stock (non-atomic) copy", base)
            return super().Do(input_dict, output_dict, exec_properties)
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        version = str(int(time.time()))
        serving_path = os.path.join(base, version)
        os.makedirs(base, exist_ok=True)
        for stale in atomic.remove_stale_staging(base, older_than_s=STALE_STAGING_S):
            log.info("Removed %s, left by a push that did not finish", stale)
        if os.path.exists(serving_path):
            log.info("Destination directory %s already exists, skipping current push.", serving_path)
        else:
            atomic.publish_tree(model_path, serving_path)
            log.info("Model written to serving path %s (complete, in one rename).", serving_path)
        io_utils.copy_dir(model_path, model_push.uri)  # the archive copy, as the stock Pusher
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
        log.info("Model pushed to %s.", model_push.uri)


class Pusher(tfx_pusher.Pusher):
    """tfx.components.Pusher whose file-system push is atomic (AtomicPushExecutor). Same inputs and outputs;
    its node id stays "Pusher"."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(AtomicPushExecutor)
