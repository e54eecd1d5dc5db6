#!/usr/bin/env bash
# Creates .venv-flink with PyFlink (PyPI apache-flink, which bundles Flink's jars; it needs a Java 17 runtime, Debian's
# openjdk-17-jre-headless), apart from the project venv and from .venv-feast: PyFlink 1.20 pins Apache Beam 2.48, which
# pins numpy < 1.25, pyarrow < 12 and protobuf < 4.24, while Feast 0.67 needs numpy >= 2, pyarrow >= 16.1 and protobuf
# >= 4.24. The streaming job (workloads/streaming) runs from it locally: tests/workloads/test_flink_job.py and
# scripts/bench_streaming.py. Same Flink as the job image (workloads/render/flink.py FLINK_VERSION).
# Then the jars of the job's Kafka path (tests/workloads/test_flink_kafka.py): Apache Kafka for a loopback broker and
# the Flink Kafka connector jar, through `mvn` and the machine's Maven settings, cached in $HYBRIDML_CACHE/kafka
# (default ~/.cache/hybridml/kafka; tools/kafka_rig.py fetch: once per version, a warm run does nothing).
#   scripts/flink_venv.sh            create/refresh (idempotent; prints the python path)
# HYBRIDML_FLINK_VENV puts it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
FLINK_VERSION="1.20.3"
VENV="${HYBRIDML_FLINK_VENV:-.venv-flink}"
python="$(scripts/tool_venv.sh "$VENV" "apache-flink-$FLINK_VERSION" "apache-flink==$FLINK_VERSION" python)"
"$python" -m tools.kafka_rig fetch >&2
echo "$python"
