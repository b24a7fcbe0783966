"""A single-node Apache Kafka broker (KRaft) run from jars fetched off Maven Central.

No Docker engine and no Apache download site are needed: Maven copies the broker's jars into a
cache once, then ``LocalBroker.start()`` writes a KRaft config on 127.0.0.1, formats storage,
starts ``java -cp 'lib/*' kafka.Kafka`` and waits until the broker answers a metadata request.
Its pid, config and log live in one data directory, so ``stop()`` ends exactly the process
that ``start()`` made.

With ``KAFKA_BOOTSTRAP_SERVERS`` set the project uses that cluster instead; see
``bootstrap_servers()``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from infra.errors import BrokerStartError, FetchError, ToolMissingError

__all__ = [
    "KAFKA_VERSION",
    "BrokerConfig",
    "BrokerStatus",
    "LocalBroker",
    "bootstrap_servers",
    "external_bootstrap",
    "fetch_jars",
    "fiml_home",
    "probe",
]

KAFKA_VERSION = "4.1.1"
_KAFKA_DIR = Path(__file__).parent / "kafka"
_POM = _KAFKA_DIR / "pom.xml"
_LOG4J = _KAFKA_DIR / "log4j2.properties"


def fiml_home() -> Path:
    """``FIML_HOME``; else ``.fiml`` in the source checkout; else the user's cache directory."""
    if "FIML_HOME" in os.environ:
        return Path(os.environ["FIML_HOME"])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout / ".fiml"
    return Path.home() / ".cache" / "fiml"


_DEFAULT_HOME = fiml_home()


_DAEMONIZE = 'exec "$@" >>"$FIML_BROKER_LOG" 2>&1 </dev/null & echo $!'


def external_bootstrap() -> str | None:
    """The user's own cluster, if ``KAFKA_BOOTSTRAP_SERVERS`` names one."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


def bootstrap_servers(default: str = "127.0.0.1:9092") -> str:
    """Where every client connects: the user's cluster, or the local broker's address."""
    return external_bootstrap() or default


@dataclass(frozen=True)
class BrokerConfig:
    """Where the local broker listens and keeps its files."""

    host: str = "127.0.0.1"
    port: int = int(os.environ.get("FIML_KAFKA_PORT", "9092"))
    controller_port: int = int(os.environ.get("FIML_KAFKA_CONTROLLER_PORT", "9093"))
    data_dir: Path = field(default_factory=lambda: _DEFAULT_HOME / "broker")
    lib_dir: Path = field(
        default_factory=lambda: Path(
            os.environ.get("FIML_KAFKA_LIB", _DEFAULT_HOME / f"kafka-{KAFKA_VERSION}" / "lib")
        )
    )
    heap: str = os.environ.get("FIML_KAFKA_HEAP", "1g")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "kraft"

    def server_properties(self) -> str:
        """A single-node KRaft config: one process is broker and controller, replication 1."""
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
                f"listeners=PLAINTEXT://{self.host}:{self.port},"
                f"CONTROLLER://{self.host}:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.storage_dir}",
                "num.partitions=1",
                # One node: internal topics cannot have more replicas than brokers.
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                # Tests and the demo create groups constantly; do not wait 3 s for joiners.
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "",
            ]
        )


@dataclass(frozen=True)
class BrokerStatus:
    up: bool
    address: str
    version: str
    pid: int | None
    topics: list[str]
    external: bool


def fetch_jars(lib_dir: Path) -> Path:
    """Copy the broker's jars from Maven Central into ``lib_dir``, once.

    Raises:
        ToolMissingError: if Maven is not installed.
        FetchError: if Maven could not resolve the artifacts (usually no network).
    """
    marker = lib_dir / ".complete"
    if marker.exists():
        return lib_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolMissingError(
            "Maven (mvn) is not installed, so the Kafka jars cannot be fetched: "
            "install it (apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS "
            "to an existing cluster."
        )
    lib_dir.mkdir(parents=True, exist_ok=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(_POM),
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={lib_dir}",
        f"-Dkafka.version={KAFKA_VERSION}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        last = next((line for line in reversed(output) if "ERROR" in line), "")
        raise FetchError(
            "Maven could not fetch the Kafka broker jars from Maven Central "
            f"({last.strip()[:300] or 'exit ' + str(result.returncode)}): check the network "
            "or proxy settings in ~/.m2/settings.xml and run the command again."
        )
    marker.write_text(KAFKA_VERSION + "\n")
    return lib_dir


def probe(bootstrap: str, timeout: float = 5.0) -> list[str] | None:
    """Topic names if a broker answers a metadata request at ``bootstrap``, else None."""
    first = bootstrap.split(",")[0].rsplit(":", 1)
    if len(first) == 2 and first[1].isdigit() and not _port_in_use(first[0], int(first[1])):
        return None  # nothing listens: skip the client, whose retries would log errors

    async def _list() -> list[str]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        await admin.start()
        try:
            return sorted(await admin.list_topics())
        finally:
            await admin.close()

    try:
        return asyncio.run(asyncio.wait_for(_list(), timeout))
    except Exception:
        return None


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _cluster_id() -> str:
    """A random cluster id as Kafka writes them (a base64url UUID) that does not start with
    "-": the storage tool would take it for an option (one format in 64 failed so; Kafka's own
    ``Uuid.randomUuid`` skips those too)."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


class LocalBroker:
    """The broker process this project starts and stops. Starting twice is harmless."""

    def __init__(self, config: BrokerConfig | None = None) -> None:
        self.config = config or BrokerConfig()

    # -- queries -------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of our broker if it is alive, else None (and a stale pid file is removed)."""
        try:
            pid = int(self.config.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if self._is_our_broker(pid):
            return pid
        self.config.pid_file.unlink(missing_ok=True)
        return None

    def _is_our_broker(self, pid: int) -> bool:
        # A recycled pid must never be killed: check that it runs kafka.Kafka on our config.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in cmdline and str(self.config.properties_file).encode() in cmdline

    def status(self) -> BrokerStatus:
        external = external_bootstrap()
        address = external or self.config.bootstrap
        topics = probe(address)
        return BrokerStatus(
            up=topics is not None,
            address=address,
            version="external" if external else KAFKA_VERSION,
            pid=None if external else self.pid(),
            topics=topics or [],
            external=external is not None,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> BrokerStatus:
        """Fetch jars if needed, format storage once, start the broker and wait until it answers.

        Raises:
            ToolMissingError: Java or Maven is missing.
            FetchError: the jars could not be fetched.
            BrokerStartError: the port is taken, the data directory is unusable, or the broker
                died or did not answer within ``timeout`` seconds (it is then stopped).
        """
        if external_bootstrap():
            return self.status()
        if self.pid() is not None:
            return self.status()
        cfg = self.config
        java = shutil.which("java")
        if java is None:
            raise ToolMissingError(
                "Java is not installed, so the local Kafka broker cannot run: "
                "install Java 17 or newer (apt-get install openjdk-17-jre-headless)."
            )
        for port in (cfg.port, cfg.controller_port):
            if _port_in_use(cfg.host, port):
                raise BrokerStartError(
                    f"Port {port} on {cfg.host} is already in use by another program: stop it, "
                    "or choose other ports with --port/--controller-port (or FIML_KAFKA_PORT)."
                )
        fetch_jars(cfg.lib_dir)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        cfg.properties_file.write_text(cfg.server_properties())
        self._format_storage(java)

        command = [
            java,
            f"-Xmx{cfg.heap}",
            "-Xms256m",
            f"-Dlog4j2.configurationFile={_LOG4J}",
            "-cp",
            f"{cfg.lib_dir}/*",
            "kafka.Kafka",
            str(cfg.properties_file),
        ]
        # Daemonise through a shell: the broker outlives this process (the CLI returns at
        # once) and, reparented to init, never lingers as our zombie. Its own session keeps
        # a terminal's Ctrl-C away from it; only stop() ends it.
        launcher = subprocess.run(
            ["sh", "-c", _DAEMONIZE, "sh", *command],
            env={**os.environ, "FIML_BROKER_LOG": str(cfg.log_file)},
            capture_output=True,
            text=True,
            check=True,
            start_new_session=True,
        )
        pid = int(launcher.stdout.strip())
        cfg.pid_file.write_text(f"{pid}\n")

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                cfg.pid_file.unlink(missing_ok=True)
                raise BrokerStartError(self._diagnose())
            if probe(cfg.bootstrap, timeout=2.0) is not None:
                return self.status()
            time.sleep(0.3)
        self.stop()
        raise BrokerStartError(
            f"The Kafka broker did not answer on {cfg.bootstrap} within {timeout:.0f} s: "
            f"read {cfg.log_file} (fiml kafka logs) for the cause."
        )

    def _format_storage(self, java: str) -> None:
        cfg = self.config
        if (cfg.storage_dir / "meta.properties").exists():
            return
        result = subprocess.run(
            [
                java,
                f"-Dlog4j2.configurationFile={_LOG4J}",
                "-cp",
                f"{cfg.lib_dir}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(cfg.properties_file),
                "-g",  # ignore-formatted: harmless if a previous run got this far
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerStartError(
                f"Formatting Kafka storage in {cfg.storage_dir} failed "
                f"({(result.stderr or result.stdout).strip().splitlines()[-1:]}): "
                f"delete {cfg.data_dir} (fiml kafka stop --wipe) and start again."
            )

    def _diagnose(self) -> str:
        cfg = self.config
        tail = self.log_tail(200)
        if "Address already in use" in tail:
            return (
                f"The broker could not bind {cfg.bootstrap} or controller port "
                f"{cfg.controller_port} (address in use): "
                "stop the other program or pick other ports."
            )
        if "meta.properties" in tail or "cluster.id" in tail or "Invalid cluster" in tail:
            return (
                f"The broker's data directory {cfg.storage_dir} is corrupt or from another "
                "cluster: delete it (fiml kafka stop --wipe) and start again."
            )
        if "UnsupportedClassVersionError" in tail:
            return "Kafka 4 needs Java 17 or newer: install it and put it first on PATH."
        return (
            "The Kafka broker exited while starting: "
            f"read {cfg.log_file} (fiml kafka logs) for the cause."
        )

    def stop(self, timeout: float = 30.0, wipe: bool = False) -> bool:
        """End the broker we started and wait for it; True if one was running.

        With ``wipe`` the data directory is deleted afterwards (topics and offsets are lost).
        """
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10.0)
            self.config.pid_file.unlink(missing_ok=True)
        if wipe:
            shutil.rmtree(self.config.data_dir, ignore_errors=True)
        return pid is not None

    def log_tail(self, lines: int = 50) -> str:
        try:
            text = self.config.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
