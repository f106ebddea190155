"""Beam pipeline options of the runtime's pipelines (transform, batch scoring)."""

from __future__ import annotations

from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

# The local engine of Beam's direct runner. Plain `DirectRunner` first tries the Prism runner, whose
# binary it downloads from GitHub at run time (no network here), then falls back to this one.
LOCAL_RUNNER = "FnApiRunner"
# Rows per Arrow record batch of the transform (its CSV batches, so TFT's analysis) and of the batch
# scoring, and per batch a model scores in taxi_model.evaluate (the batches TFMA's extraction used:
# the same predictions). Left to Beam's BatchElements, batch sizes follow measured timings, so a
# busier machine batches differently, and TFT's approximate quantiles and float sums then differ
# between reruns of the same window. A fixed size makes a rerun reproduce its outputs. 1000 is
# tfx-bsl's own cap.
BATCH_SIZE = 1000


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    options = PipelineOptions(list(beam_args))
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = LOCAL_RUNNER
    return options
