"""Files the configuration names but the daemon reads only when it uses them: the loading
link's TLS material ([loading] ca, cert, key).

A missing or unreadable file there does not stop the daemon (a gate or a kiosk's reads
must not go dark because of the loading link): it starts with the link down, says so in
the journal, in GetStatus and in the metrics. `cardapd --check-config` reports the same
problems before a start, as the daemon's own user when run as root.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from cardapd.config.schema import LoadingConfig

SERVICE_USER = "cardapd"
"""The user the packaged unit runs the daemon as (systemd/cardapd.service, User=)."""


@dataclass(frozen=True)
class FileProblem:
    """One named file the daemon could not use."""

    key: str  # e.g. "loading.cert"
    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.key}: {self.path}: {self.problem}"


def _content_problem(kind: str, data: bytes) -> str | None:
    """What is wrong with a PEM file's content (None: usable)."""
    try:
        if kind == "key":
            load_pem_private_key(data, password=None)
        else:
            x509.load_pem_x509_certificates(data)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        return "the private key is encrypted; cardapd needs it unencrypted (mode 0640)"
    except ValueError:
        return ("not a PEM private key" if kind == "key"
                else "not a PEM certificate (-----BEGIN CERTIFICATE-----)")
    return None


def _read(path: Path) -> tuple[bytes | None, str | None]:
    """The file's bytes, or what prevents this process from reading them."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, "missing"
    except PermissionError:
        return None, f"not reachable by {_whoami()} (permission denied on a directory)"
    except OSError as exc:
        return None, exc.strerror or str(exc)
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    try:
        return path.read_bytes(), None
    except PermissionError:
        return None, f"not readable by {_whoami()} (permission denied)"
    except OSError as exc:
        return None, exc.strerror or str(exc)


def _whoami() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def readable_as(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` (with its groups) can open `path` for reading: a child process takes
    that identity and tries, so modes, ACLs and every directory on the way count. Needs
    root; only for `--check-config` (a single-threaded process)."""
    groups = os.getgrouplist(user.pw_name, user.pw_gid)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.setgroups(groups)
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            with open(path, "rb") as f:
                f.read(1)
            code = 0
        except BaseException:  # noqa: S110 - the exit code carries the answer
            pass
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def loading_tls_problems(cfg: LoadingConfig, *, as_user: str | None = None
                         ) -> list[FileProblem]:
    """Problems with the loading link's CA, certificate and key (none without a loading
    service). With `as_user` (and root privileges) each file must also be readable by that
    user, e.g. the service user when root runs `--check-config`."""
    if not cfg.configured:
        return []
    user = None
    if as_user is not None and os.geteuid() == 0:
        try:
            user = pwd.getpwnam(as_user)
        except KeyError:
            user = None  # not installed as a service: nothing more to check
    problems = []
    for name in ("ca", "cert", "key"):
        path: Path | None = getattr(cfg, name)
        if path is None:  # the schema requires all three with an address
            continue
        data, problem = _read(path)
        if problem is None and data is not None:
            problem = _content_problem(name, data)
        if problem is None and user is not None and user.pw_uid != os.geteuid() \
                and not readable_as(path, user):
            problem = (f"not readable by the service user {user.pw_name} (e.g. chown "
                       f"root:{user.pw_name} and chmod 0640 the file, 0750 its directory)")
        if problem is not None:
            problems.append(FileProblem(f"loading.{name}", path, problem))
    return problems
