"""The streaming ingestion job of a streaming feature view: a PyFlink job that reads the view's stream and writes
its rows to the online store through Feast's push path (the feature server's `/push`, over TLS).

It runs in the Flink job image (workloads/render/flink.py renders the FlinkDeployment that starts it with
`-pym workloads.streaming.job` and its configuration as arguments) and, locally, in `.venv-flink`
(scripts/flink_venv.sh; tests/workloads/test_flink_job.py, scripts/bench_streaming.py). Only `job` imports PyFlink;
`config`, `rows` and `push` use the standard library alone, so the project's tests import them directly and the job
image needs nothing of the project but this package.
"""
