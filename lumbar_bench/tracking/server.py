"""A shared MLflow tracking server for one machine: PostgreSQL plus ``mlflow server``, on 127.0.0.1 only.

``make tracking-server`` (``scripts/tracking-server``) runs :func:`main`; the tests' ``mlflow_server``
fixture uses :class:`TrackingServer` directly, so both start the same way. Everything lives in one
directory (default ``.tracking-server/``): the database cluster (``pgdata/``), its password
(``pg-password``), the artifacts (``artifacts/``, served by the server: clients upload and download
through HTTP and need no access to the directory) and the logs. A second start reuses it.

PostgreSQL refuses to run as root; started by root, it runs as the ``postgres`` system user (through
``runuser``), which then owns ``pgdata/``. It listens on 127.0.0.1 only, with a password (scram),
and on no Unix socket. The server's database URI (password included) reaches ``mlflow server``
through its environment, not its command line, which every local user can read.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lumbar_bench.core.signals import terminate_as_interrupt

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_DIR = Path(".tracking-server")
DB_USER = "mlflow"
DB_NAME = "mlflow"
#: The system user PostgreSQL runs as when the server is started by root.
PG_SYSTEM_USER = "postgres"
#: Where Debian installs PostgreSQL's server programs (``initdb`` and ``pg_ctl`` are not on PATH).
_PG_ROOTS = ("/usr/lib/postgresql",)


@dataclass(frozen=True)
class ServerConfig:
    """Where the server keeps its files and which ports it listens on (0: a free one)."""

    root: Path = DEFAULT_DIR
    port: int = 5000
    pg_port: int = 0
    #: ``mlflow server`` worker processes (each about 250 MB).
    workers: int = 2
    #: Seconds to wait for ``mlflow server`` to answer (its first start migrates the schema, ~30 s).
    timeout_s: float = 180.0


def pg_bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (PATH first, then Debian's newest); None if absent."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(Path(r).glob("*/bin/pg_ctl") for r in _PG_ROOTS if Path(r).is_dir())
    paths = sorted((p for group in candidates for p in group), key=lambda p: _version(p.parent.parent.name))
    return paths[-1].parent if paths else None


def _version(name: str) -> tuple[int, ...]:
    """``15`` or ``9.6`` as a sortable tuple (a name that is not a version sorts first)."""
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return ()


def missing() -> str | None:
    """Why the server cannot start on this machine (one line), or None when it can."""
    if pg_bin_dir() is None:
        return "PostgreSQL is not installed (no initdb/pg_ctl; apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401 - lazy: an optional dependency (the `server` extra)
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[server]')"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _user_exists(PG_SYSTEM_USER)):
        return f"running as root needs the {PG_SYSTEM_USER!r} system user and runuser to start PostgreSQL"
    return None


def _user_exists(name: str) -> bool:
    """True when the system user ``name`` exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class TrackingServer:
    """PostgreSQL and ``mlflow server`` for one directory; a context manager that stops both."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.root = config.root.resolve()
        self.port = config.port or free_port()
        self.pg_port = config.pg_port or free_port()
        self._bin = pg_bin_dir()
        self._mlflow: subprocess.Popen[bytes] | None = None
        self._pg_running = False

    @property
    def uri(self) -> str:
        """The tracking URI clients pass as ``--tracking-uri``."""
        return f"http://{HOST}:{self.port}"

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL cluster's data directory."""
        return self.root / "pgdata"

    def start(self) -> TrackingServer:
        """Create the cluster and database on first use, start PostgreSQL, then ``mlflow server``."""
        reason = missing()
        if reason:
            raise RuntimeError(f"cannot start the tracking server: {reason}")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "artifacts").mkdir(exist_ok=True)
        try:
            if not (self.pgdata / "PG_VERSION").exists():
                self._init_cluster()
            self._start_postgres()
            self._ensure_database()
            self._start_mlflow()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop ``mlflow server`` (its whole process group), then PostgreSQL (a fast, clean shutdown)."""
        if self._mlflow is not None:
            _stop_group(self._mlflow)
            self._mlflow = None
        if self._pg_running:
            self._pg(["pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w"], check=False)
            self._pg_running = False

    def __enter__(self) -> TrackingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pg(self, argv: list[str], check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program (``argv[0]`` from its bin dir), as ``postgres`` when we are root."""
        assert self._bin is not None
        cmd = [str(self._bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_SYSTEM_USER, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
        if check and done.returncode:
            raise RuntimeError(
                f"{argv[0]} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}"
            )
        return done

    def _password(self) -> str:
        """The database password, made on first use and kept in ``pg-password`` (mode 600)."""
        path = self.root / "pg-password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        return path.read_text().strip()

    def _init_cluster(self) -> None:
        """``initdb`` a fresh cluster: superuser ``mlflow`` with a password, TCP on 127.0.0.1 only."""
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.root / "pg-password"
        self._password()
        if os.geteuid() == 0:
            shutil.chown(self.pgdata, PG_SYSTEM_USER)
            shutil.chown(pwfile, PG_SYSTEM_USER)  # initdb reads it as that user; root still can
            probe = ["runuser", "-u", PG_SYSTEM_USER, "--", "test", "-w", str(self.pgdata)]
            if subprocess.run(probe, cwd="/").returncode:
                raise RuntimeError(
                    f"the {PG_SYSTEM_USER} user cannot reach {self.pgdata}: every directory above it must"
                    " be searchable by others (chmod o+x), or choose another --dir"
                )
        log.info("creating the PostgreSQL cluster in %s", self.pgdata)
        self._pg(
            ["initdb", "-D", str(self.pgdata), "-U", DB_USER, f"--pwfile={pwfile}", "-E", "UTF8"]
            + ["--auth-host=scram-sha-256", "--auth-local=peer", "--no-instructions"],
            cwd="/",
        )
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# lumbar-bench tracking server: TCP on 127.0.0.1 only, no Unix socket\n"
                f"listen_addresses = '{HOST}'\nunix_socket_directories = ''\n"
            )

    def _start_postgres(self) -> None:
        """``pg_ctl start`` on ``pg_port``, in a session of its own (a Ctrl-C reaches only us)."""
        if self._pg(["pg_ctl", "status", "-D", str(self.pgdata)], check=False, cwd="/").returncode == 0:
            raise RuntimeError(f"PostgreSQL already runs on {self.pgdata}: is another tracking server up?")
        log.info("starting PostgreSQL on %s:%d", HOST, self.pg_port)
        logfile = self.pgdata / "server.log"
        self._pg(
            ["pg_ctl", "start", "-D", str(self.pgdata), "-l", str(logfile), "-w", "-t", "60"]
            + ["-o", f"-p {self.pg_port}"],
            cwd="/",
            start_new_session=True,
        )
        self._pg_running = True

    def database_uri(self) -> str:
        """The SQLAlchemy URI of the server's database (psycopg2; SQLAlchemy 2.1's default is psycopg 3)."""
        return f"postgresql+psycopg2://{DB_USER}:{self._password()}@{HOST}:{self.pg_port}/{DB_NAME}"

    def _ensure_database(self) -> None:
        """Create the ``mlflow`` database unless it exists."""
        import psycopg2  # lazy: an optional dependency (the `server` extra), checked by missing()

        conn = psycopg2.connect(
            host=HOST, port=self.pg_port, user=DB_USER, password=self._password(), dbname="postgres"
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            conn.close()

    def _start_mlflow(self) -> None:
        """Start ``mlflow server`` and wait until it answers ``/health``."""
        env = {
            **os.environ,
            "MLFLOW_BACKEND_STORE_URI": self.database_uri(),
            # the job runner (GenAI jobs) takes about 1 GB more, for nothing lumbar-bench uses
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        argv = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(self.port)]
        argv += ["--workers", str(self.config.workers)]
        argv += ["--artifacts-destination", str(self.root / "artifacts")]
        log.info("starting mlflow server on %s", self.uri)
        with (self.root / "mlflow.log").open("ab") as out:
            self._mlflow = subprocess.Popen(
                argv, env=env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Poll ``/health`` until it answers; raise (with the log's tail) if the server exits or is slow."""
        assert self._mlflow is not None
        deadline = time.monotonic() + self.config.timeout_s
        while time.monotonic() < deadline:
            if self._mlflow.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self._mlflow.returncode}):\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"mlflow server did not answer in {self.config.timeout_s:.0f} s:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        """The last lines of ``mlflow.log``."""
        path = self.root / "mlflow.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def alive(self) -> bool:
        """True while ``mlflow server`` runs."""
        return self._mlflow is not None and self._mlflow.poll() is None


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM ``proc``'s process group (server and workers); SIGKILL what is left after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/tracking-server``."""
    p = argparse.ArgumentParser(
        prog="tracking-server",
        description="Start PostgreSQL and mlflow server on 127.0.0.1; Ctrl-C stops both.",
    )
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="data directory (default %(default)s)")
    p.add_argument("--port", type=int, default=5000, help="mlflow server's port; 0: a free one (%(default)s)")
    p.add_argument("--pg-port", type=int, default=0, help="PostgreSQL's port; 0: a free one (default)")
    p.add_argument("--workers", type=int, default=2, help="mlflow server workers (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Start the server, print the URI to use, and serve until Ctrl-C or SIGTERM; 1 if it dies."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="tracking-server: %(message)s")
    server = TrackingServer(ServerConfig(args.dir, args.port, args.pg_port, args.workers))
    try:
        with terminate_as_interrupt(), server:
            print(f"MLflow tracking server ready: --tracking-uri {server.uri}", flush=True)
            print(f"  UI: {server.uri}   data: {server.root}   stop: Ctrl-C", flush=True)
            while server.alive():
                time.sleep(1)
            log.error("mlflow server exited; see %s", server.root / "mlflow.log")
            return 1
    except KeyboardInterrupt:
        log.info("stopped mlflow server and PostgreSQL")
        return 0
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
