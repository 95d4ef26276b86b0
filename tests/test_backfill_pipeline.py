"""``backfill/pipeline.py``: where the work goes, from the cluster's resources (the Ray runs are in
tests/integration/test_backfill.py)."""

from __future__ import annotations

from backfill.pipeline import PipelineOptions, Plan, plan


def test_one_actor_per_gpu_else_per_two_cpus():
    assert plan(PipelineOptions(), {"CPU": 2.0}) == Plan(actors=1, actor_cpus=1.0, actor_gpus=0.0, session_threads=1,
                                                         decode_cpus=1.0)
    assert plan(PipelineOptions(), {"CPU": 64.0}).actors == 32
    assert plan(PipelineOptions(actor_cpus=4), {"CPU": 64.0}) == Plan(8, 4.0, 0.0, 4, 1.0)
    gpus = plan(PipelineOptions(), {"CPU": 32.0, "GPU": 4.0})
    assert (gpus.actors, gpus.actor_gpus) == (4, 1.0)
    assert plan(PipelineOptions(gpus_per_actor=0.5), {"CPU": 32.0, "GPU": 2.0}).actors == 4


def test_explicit_choices_win():
    chosen = plan(PipelineOptions(actors=3, actor_cpus=0.5, session_threads=2, decode_cpus=0.25, gpus_per_actor=0),
                  {"CPU": 2.0, "GPU": 1.0})
    assert chosen == Plan(actors=3, actor_cpus=0.5, actor_gpus=0.0, session_threads=2, decode_cpus=0.25)
    assert plan(PipelineOptions(), {}).actors == 1  # a cluster still starting reports no CPUs yet
