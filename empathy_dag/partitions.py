"""Every per-emotion asset is partitioned by the 28 GoEmotions labels, in taxonomy order, so that a
range over all of them (first..last) is one single-run backfill."""

from dagster import BackfillPolicy, StaticPartitionsDefinition

from empathy_dag.taxonomy import EMOTIONS

emotion_partitions = StaticPartitionsDefinition(EMOTIONS)

# Run tags of one run over every emotion: jobs that mix per-emotion and unpartitioned assets (main,
# retraining, nightly evaluation) need them, or their per-emotion steps have no partition to work on.
ALL_EMOTIONS_TAGS = {
    "dagster/asset_partition_range_start": EMOTIONS[0],
    "dagster/asset_partition_range_end": EMOTIONS[-1],
}

# One run over many emotions loads each model once and reads each source file once.
single_run = BackfillPolicy.single_run()
