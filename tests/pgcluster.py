"""A throwaway PostgreSQL cluster in a temp dir, for the tests and the benchmark.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` system
user and its commands run through ``setpriv``. Trust auth, loopback only. For the tests,
durability is off (nothing there needs to survive a power cut); ``Cluster(durable=True)``
keeps PostgreSQL's own defaults (fsync, synchronous_commit and full_page_writes on), which
is what a real shared journal runs with and what the benchmark's quoted numbers use.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

MISSING = ("PostgreSQL server binaries (initdb, pg_ctl) are not on PATH; install them with "
           "`apt-get install postgresql` (Debian puts them in /usr/lib/postgresql/*/bin)")


class Unavailable(Exception):
    """No cluster can be started here; the message says how to get one."""


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


#: Settings that trade crash safety for speed; the tests use them, a real journal does not.
NOT_DURABLE = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class Cluster:
    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if not initdb or not pg_ctl:
            raise Unavailable(MISSING)
        self.pg_ctl = pg_ctl
        self.as_user: list[str] = []
        self.base = Path(tempfile.mkdtemp(prefix="cw-pg-"))
        if os.geteuid() == 0:
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.base, ignore_errors=True)
                raise Unavailable("running as root and there is no 'postgres' user to run "
                                  "PostgreSQL as; " + MISSING) from None
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self.as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data = self.base / "data"
        subprocess.run([*self.as_user, initdb, "-D", str(self.data), "-A", "trust", "-U",
                        "postgres", "--no-sync"], check=True, capture_output=True)
        opts = (f"-k {self.base} -p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c max_connections=200{'' if durable else ' ' + NOT_DURABLE}")
        started = subprocess.run([*self.as_user, pg_ctl, "-D", str(self.data), "-l",
                                  str(self.base / "log"), "-w", "-o", opts, "start"],
                                 capture_output=True, text=True)
        if started.returncode != 0:
            log = self.base / "log"
            text = log.read_text(errors="replace") if log.exists() else ""
            shutil.rmtree(self.base, ignore_errors=True)
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{text}")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._databases = 0

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
