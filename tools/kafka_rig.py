"""A real Kafka broker on loopback for the streaming job's Kafka path: tests/workloads/test_flink_kafka.py.

    python -m tools.kafka_rig fetch      fetch the broker's jars and build the Flink connector jar (cached; prints where)

**The jars** come from Maven through `mvn` and the machine's own Maven settings (its mirror; no registry is named
here), into `$HYBRIDML_CACHE/kafka` (default ~/.cache/hybridml/kafka), one folder per version; a warm run does
nothing. Never into the repository.
- the broker: Apache Kafka `KAFKA_VERSION` (`org.apache.kafka:kafka_2.13` with `kafka-tools` for the topic and
  console-producer tools, their runtime dependencies less Kafka Connect's, and log4j's slf4j binding).
- the Flink connector: the job image carries `flink-sql-connector-kafka` (flink-connector-kafka with kafka-clients
  relocated under `org.apache.flink.kafka.shaded`, which PyFlink's `KafkaOffsetResetStrategy` names). Maven serves no
  Flink 1.20 build of it here (3.3.0-1.20 and 3.4.0-1.20 are refused), but it serves `flink-connector-kafka`
  `CONNECTOR_VERSION`, so `fetch` builds the same jar from it with the shade configuration of the official
  flink-sql-connector-kafka pom (same includes, same relocation); `mvn package` of a pom without sources: no javac.

**The broker** (`Broker`): one KRaft node (broker and controller in one JVM, no ZooKeeper) in a temporary folder:
storage formatted with a random cluster id, the client listener TLS-only on 127.0.0.1 (the rig's throwaway-CA
certificate, PEM files, as Strimzi's `tls` listener that the job is rendered for), the controller listener plaintext
on loopback. Topics are created and records produced with Kafka's own tools (`TopicCommand`, `ConsoleProducer`) from
the same jars, over TLS. Everything it starts it stops.

Standard library only: `fetch` runs before the project's venv exists (scripts/flink_venv.sh).
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "4.1.1"
SCALA = "2.13"
FLINK_MINOR = "1.20"
"""The Flink of the job image (workloads/render/flink.py FLINK_VERSION 1.20.3): the connector must be built for it."""
CONNECTOR_VERSION = f"3.4.0-{FLINK_MINOR}"
SHADE_PLUGIN = "3.6.0"
CONNECTOR_BUILD = ["package", "-Dmaven.main.skip", "-Dmaven.test.skip", "-Dmaven.resources.skip"]
"""`mvn` arguments that build the connector jar from `CONNECTOR_POM`; the job image builds it with the same
(workloads/streaming/Containerfile, scripts/job_image_context.py)."""
LOG4J_VERSION = "2.24.3"
"""log4j's slf4j binding, of the log4j Kafka already depends on (else the broker logs nothing, even its errors)."""
TOOL_JVM = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto"]
"""Kafka's command-line tools and the loopback broker: the client compiler only and one GC thread start a JVM in
about half the time on a busy 2-core machine."""


class KafkaRigError(RuntimeError):
    pass


# ---- the jars -----------------------------------------------------------------------------------------------------

def cache_root() -> Path:
    return Path(os.environ.get("HYBRIDML_CACHE", Path.home() / ".cache" / "hybridml")) / "kafka"


def broker_libs() -> Path:
    return cache_root() / f"kafka_{SCALA}-{KAFKA_VERSION}" / "libs"


def connector_jar() -> Path:
    return cache_root() / f"flink-sql-connector-kafka-{CONNECTOR_VERSION}" / f"flink-sql-connector-kafka-{CONNECTOR_VERSION}.jar"


def _stamp(path: Path) -> Path:
    return path.parent / ".complete"


def missing() -> list[str]:
    """What the Kafka rig lacks, each with how to get it (empty: ready)."""
    out = []
    if shutil.which("java") is None:
        out.append("no java on PATH (apt-get install -y openjdk-17-jre-headless)")
    if not _stamp(broker_libs()).exists():
        out.append(f"no Kafka {KAFKA_VERSION} jars in {broker_libs()} (run scripts/flink_venv.sh or python -m tools.kafka_rig fetch)")
    if not _stamp(connector_jar()).exists():
        out.append(f"no Flink Kafka connector jar at {connector_jar()} (run scripts/flink_venv.sh)")
    return out


_POM_HEAD = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.hybridml</groupId><artifactId>{artifact}</artifactId><version>0</version><packaging>{packaging}</packaging>
  <properties><project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>
"""

BROKER_POM = _POM_HEAD.format(artifact="kafka-rig-broker", packaging="pom") + f"""  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA}</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{KAFKA_VERSION}</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion></exclusions>
    </dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

CONNECTOR_POM = _POM_HEAD.format(artifact="flink-sql-connector-kafka", packaging="jar") + f"""  <dependencies>
    <dependency><groupId>org.apache.flink</groupId><artifactId>flink-connector-kafka</artifactId><version>{CONNECTOR_VERSION}</version></dependency>
  </dependencies>
  <build>
    <finalName>flink-sql-connector-kafka-{CONNECTOR_VERSION}</finalName>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId><artifactId>maven-shade-plugin</artifactId><version>{SHADE_PLUGIN}</version>
        <executions><execution><phase>package</phase><goals><goal>shade</goal></goals>
          <configuration>
            <!-- as the official flink-sql-connector-kafka pom: the connector and kafka-clients, kafka relocated -->
            <artifactSet><includes><include>org.apache.flink:flink-connector-kafka</include><include>org.apache.kafka:*</include></includes></artifactSet>
            <filters><filter><artifact>org.apache.kafka:*</artifact><excludes><exclude>kafka/kafka-version.properties</exclude>
              <exclude>LICENSE</exclude><exclude>NOTICE</exclude><exclude>common/**</exclude></excludes></filter></filters>
            <relocations><relocation><pattern>org.apache.kafka</pattern><shadedPattern>org.apache.flink.kafka.shaded.org.apache.kafka</shadedPattern></relocation></relocations>
            <createDependencyReducedPom>false</createDependencyReducedPom>
          </configuration>
        </execution></executions>
      </plugin>
    </plugins>
  </build>
</project>
"""


def _mvn(args: list[str], cwd: Path, what: str) -> None:
    if shutil.which("mvn") is None:
        raise KafkaRigError(f"{what}: no mvn on PATH (Debian package maven); it fetches through the machine's Maven settings")
    res = subprocess.run(["mvn", "-B", "-q", *args], cwd=cwd, capture_output=True, text=True)
    if res.returncode:
        raise KafkaRigError(f"{what}: mvn {' '.join(args)} failed ({res.returncode}):\n{(res.stdout + res.stderr)[-3000:]}")


def _build_once(target: Path, pom: str, args: list[str], what: str, made: Callable[[Path], Path | None]) -> float | None:
    """Run mvn on `pom` in a scratch folder in `target`'s (emptied) folder unless its stamp says it is complete; `made(work)` returns
    what mvn produced to move into place (None: it is already where it belongs). Seconds taken, None when cached."""
    if _stamp(target).exists():
        return None
    started = time.monotonic()
    work = target.parent / "build"
    shutil.rmtree(target.parent, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "pom.xml").write_text(pom)
    _mvn(args, work, what)
    produced = made(work)
    if produced is not None:
        shutil.move(str(produced), target)
    shutil.rmtree(work)
    _stamp(target).touch()
    return time.monotonic() - started


def fetch(log=print) -> dict[str, float]:
    """The broker's jars and the connector jar into the cache (each once: a stamp marks it complete). Seconds per part
    fetched; empty when both were there."""
    took: dict[str, float] = {}
    libs, jar = broker_libs(), connector_jar()

    def broker_made(_work: Path) -> None:
        if not any(libs.glob(f"kafka_{SCALA}-{KAFKA_VERSION}.jar")):
            raise KafkaRigError(f"Kafka {KAFKA_VERSION}: mvn left no kafka_{SCALA} jar in {libs}")

    def connector_made(work: Path) -> Path:
        built = work / "target" / jar.name
        if not built.exists():
            raise KafkaRigError(f"flink-connector-kafka {CONNECTOR_VERSION}: mvn package left no {built}")
        return built

    seconds = _build_once(libs, BROKER_POM, ["dependency:copy-dependencies", f"-DoutputDirectory={libs}",
                                             "-DincludeScope=runtime"], f"Kafka {KAFKA_VERSION}", broker_made)
    if seconds is not None:
        took["broker"] = seconds
        log(f"kafka_rig: Kafka {KAFKA_VERSION} jars in {libs} ({seconds:.1f} s)")
    seconds = _build_once(jar, CONNECTOR_POM, CONNECTOR_BUILD, f"flink-connector-kafka {CONNECTOR_VERSION}",
                          connector_made)
    if seconds is not None:
        took["connector"] = seconds
        log(f"kafka_rig: {jar.name} built in {jar.parent} ({seconds:.1f} s)")
    return took


# ---- the broker ---------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_id() -> str:
    """A random KRaft cluster id (what `kafka-storage random-uuid` prints: 16 random bytes, base64url, no padding)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


LOG4J2 = """status = error
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = err
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


@dataclass
class Broker:
    """One KRaft broker+controller on 127.0.0.1, TLS for clients with the certificate in `tls` (tls.crt, tls.key,
    ca.crt: the rig's throwaway CA, as tools/feast_rig.py lays it out)."""

    workdir: Path
    tls: Path
    partitions: int = 2
    port: int = 0
    controller_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, main: str, args: list[str], heap: str = "-Xmx256m") -> list[str]:
        return ["java", *TOOL_JVM, heap, f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                "-cp", f"{broker_libs()}/*", main, *args]

    def client_config(self) -> Path:
        """TLS for Kafka's tools: trust the rig's CA (PEM), check the broker's name (127.0.0.1, a SAN)."""
        path = self.workdir / "client.properties"
        path.write_text(f"security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={self.tls / 'ca.crt'}\n")
        return path

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.controller_port = self.port or free_port(), self.controller_port or free_port()
        pem = self.workdir / "broker.pem"    # key and chain in one PEM file, as Kafka's PEM key store reads them
        pem.write_text((self.tls / "tls.key").read_text() + (self.tls / "tls.crt").read_text())
        pem.chmod(0o600)
        (self.workdir / "log4j2.properties").write_text(LOG4J2)
        conf = {
            "process.roles": "broker,controller", "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"SSL://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "SSL:SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SSL", "controller.listener.names": "CONTROLLER",
            "ssl.keystore.type": "PEM", "ssl.keystore.location": str(pem),
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(self.tls / "ca.crt"),
            "log.dirs": str(self.workdir / "data"), "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "false",
            # one node: every internal topic with one replica, one partition for the group offsets (fast to create)
            "offsets.topic.replication.factor": "1", "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1", "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1", "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in conf.items()))
        return path

    def start(self, timeout: float = 90) -> None:
        """Format the storage (a random cluster id) and start the node; returns once the TLS listener accepts."""
        config = self.write_config()
        res = subprocess.run(self._java("kafka.tools.StorageTool", ["format", "-t", cluster_id(), "-c", str(config)]),
                             capture_output=True, text=True, timeout=timeout)
        if res.returncode:
            raise KafkaRigError(f"kafka-storage format failed ({res.returncode}): {(res.stdout + res.stderr)[-2000:]}")
        log = open(self.workdir / "broker.log", "w")  # noqa: SIM115 - the broker's, closed with it
        self.procs["broker"] = subprocess.Popen(self._java("kafka.Kafka", [str(config)], heap="-Xmx512m"), stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs["broker"].poll() is not None:
                raise KafkaRigError(f"the Kafka broker exited ({self.procs['broker'].returncode}):\n{self.log_tail()}")
            if "Kafka Server started" in (self.workdir / "broker.log").read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise KafkaRigError(f"the Kafka broker did not start in {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        path = self.workdir / "broker.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def tool(self, main: str, args: list[str], stdin: str | None = None, timeout: float = 90) -> str:
        res = subprocess.run(self._java(main, args), input=stdin, capture_output=True, text=True, timeout=timeout)
        if res.returncode:
            raise KafkaRigError(f"{main} {' '.join(args)} failed ({res.returncode}): {(res.stdout + res.stderr)[-2000:]}")
        return res.stdout

    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        self.tool("org.apache.kafka.tools.TopicCommand",
                  ["--bootstrap-server", self.bootstrap, "--command-config", str(self.client_config()), "--create",
                   "--topic", topic, "--partitions", str(partitions or self.partitions), "--replication-factor", "1"])

    def _producer_args(self, topic: str) -> list[str]:
        return ["--bootstrap-server", self.bootstrap, "--producer.config", str(self.client_config()), "--topic", topic,
                "--request-required-acks", "all", "--timeout", "0", "--property", "parse.key=true",
                "--property", "key.separator=\t"]

    def produce(self, topic: str, records: Iterable[tuple[str, str]]) -> None:
        """(key, value) records through Kafka's console producer, keyed as a producer keys by entity (so one entity's
        records keep their order in one partition); acks=all, so they are in the log when it returns."""
        self.tool("org.apache.kafka.tools.ConsoleProducer", self._producer_args(topic),
                  stdin="".join(f"{key}\t{value}\n" for key, value in records))

    def producer(self, topic: str) -> subprocess.Popen:
        """A console producer left running: write `key<TAB>value` lines to its stdin; each is sent at once
        (`--timeout 0`: linger.ms 0)."""
        return subprocess.Popen(self._java("org.apache.kafka.tools.ConsoleProducer", self._producer_args(topic)),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def end_offsets(self, topic: str) -> dict[int, int]:
        out = self.tool("org.apache.kafka.tools.GetOffsetShell",
                        ["--bootstrap-server", self.bootstrap, "--command-config", str(self.client_config()), "--topic", topic])
        offsets = {}
        for line in out.split():
            name, part, offset = line.rsplit(":", 2)
            offsets[int(part)] = int(offset)
        return offsets

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs.clear()


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        print("usage: python -m tools.kafka_rig fetch", file=sys.stderr)
        sys.exit(2)
    try:
        took = fetch()
    except KafkaRigError as exc:
        print(f"kafka_rig: {exc}", file=sys.stderr)
        sys.exit(1)
    if not took:
        print(f"kafka_rig: Kafka {KAFKA_VERSION} and {connector_jar().name} already in {cache_root()}")
