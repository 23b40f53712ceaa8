"""`make run`: bring up the real stack with a demo card, show it working, run until stopped.

The harness supervises what it starts: Ctrl-C, SIGTERM, SIGHUP, a closed stdout pipe
(`make run | head`, or `| tee` killed by the same Ctrl-C) and the unexpected death of any
of its processes all lead to one stop path, which stops every process in order and is
never blocked by a failing print. Each process is also tied to the harness by
PR_SET_PDEATHSIG (`cardap_sim.procs`), so even a SIGKILL of the harness leaves nothing
behind. Only one `make run` runs per directory: a second one says so and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from cardap_sim.loadsvc.hours import JST, ServiceHours
from cardap_sim.stack import Stack

EXIT_OK, EXIT_FAILED, EXIT_ALREADY_RUNNING = 0, 1, 2
WATCH_INTERVAL_S = 0.2


class Stop(BaseException):
    """A stop was asked for by a signal (Ctrl-C's SIGINT, SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


class Terminal:
    """stdout that never raises: once its reader is gone, output is dropped."""

    def __init__(self) -> None:
        self.closed = False

    def say(self, text: str) -> None:
        """Print one message (nothing when stdout is closed)."""
        if self.closed:
            return
        try:
            print(text, flush=True)
        except OSError:  # BrokenPipeError and friends: the reader went away
            self._drop()

    def gone(self) -> bool:
        """Whether stdout's reader went away (a pipe without reader polls as an error)."""
        if not self.closed:
            poller = select.poll()
            poller.register(sys.stdout.fileno(), 0)  # errors and hang-ups are always reported
            for _, events in poller.poll(0):
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    self._drop()
        return self.closed

    def _drop(self) -> None:
        """Point stdout at /dev/null so that nothing (not even the exit flush) fails."""
        self.closed = True
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


@contextlib.contextmanager
def single_instance(workdir: Path) -> Iterator[int | None]:
    """Hold `<workdir>.lock`; yields None when held, else the pid of the holder."""
    lock_path = workdir.with_name(workdir.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            yield int(text) if text.isdigit() else 0
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield None
    finally:
        os.close(fd)  # releases the lock


def exited(stack: Stack) -> tuple[str, int] | None:
    """The first process of the stack that is no longer running: (name, exit status)."""
    for name, proc in stack.processes().items():
        code = proc.poll()
        if code is not None:
            return name, code
    return None


def describe(code: int) -> str:
    """An exit status in words."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


class Signals:
    """Stop signals: raised as `Stop` while the stack comes up; while it only runs, noted
    and acted on by `watch` (an exception raised from a signal handler while the garbage
    collector finalises a gRPC object would be swallowed there, with a traceback, and the
    stop lost)."""

    def __init__(self) -> None:
        self.raising = True
        self.pending: int | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        """The handler of SIGINT, SIGTERM and SIGHUP."""
        if self.pending is None:
            self.pending = signum
        if self.raising:
            raise Stop(signum)


SIGNALS = Signals()


def watch(stack: Stack, term: Terminal) -> int:
    """Wait until a stop is asked for, a process of the stack dies or stdout goes away; the
    exit code."""
    SIGNALS.raising = False
    while True:
        if SIGNALS.pending is not None:
            raise Stop(SIGNALS.pending)
        dead = exited(stack)
        if dead is not None:
            term.say(f"{dead[0]} stopped unexpectedly ({describe(dead[1])}); stopping the "
                     f"rest. Logs: {stack.dir}/*.log")
            return EXIT_FAILED
        if term.gone():
            return EXIT_OK  # nobody reads the output any more: stop quietly
        time.sleep(WATCH_INTERVAL_S)


def show(stack: Stack, term: Terminal, demo: bool) -> None:
    """Insert the demo card and, unless `demo` is false, walk through the main flows."""
    from cardap.client import CardapClient

    card = stack.demo_card()
    other = stack.new_card("second", profile="vendor-b")
    with CardapClient(stack.socket("gate")) as gate:
        events = gate.watch(timeout=10)
        for ev in events:  # wait for the snapshot before inserting
            if ev.kind == 2:  # SNAPSHOT_END
                break
        stack.control.insert(0, card)
        for ev in events:
            if ev.kind == 5:  # CARD_INSERTED
                term.say(f"card inserted in {ev.reader.name!r}: card {ev.reader.card.card_id}"
                         f" ({ev.reader.card.profile}), tap-to-ID user ID "
                         f"{ev.reader.card.tap[0].user_id}")
                break
        if demo:
            read = gate.read_user_id()
            term.say(f"ReadUserId → {read.user_id} (cached={read.cached})")
    session = admin = ""
    if demo:
        admin, session = demo_operators(stack, term)
        with CardapClient(stack.socket("kiosk"), session=session, timeout=60) as kiosk:
            for d in kiosk.diagnose().readers:
                term.say(f"Diagnose {d.reader.name!r}: {d.next_action}")
            for step in kiosk.load_ap("org-a-staff-c"):
                if step.WhichOneof("event") == "result":
                    r = step.result
                    term.say(f"LoadAp org-a-staff-c → instance {r.aid}, user ID {r.user_id}, "
                             f"{r.free_bytes} bytes free in the extended area (relayed to "
                             "the loading service in 2 round trips)")
                    with CardapClient(stack.socket("gate")) as gate:
                        read = gate.read_user_id(aid=r.aid, fresh=True)
                        term.say(f"ReadUserId of the new AP → {read.user_id}")
            aps = kiosk.card_aps()
            term.say("ListCardAps → " + ", ".join(a.aid for a in aps.aps))
    term.say(try_this(stack, card, other, admin, session))


def try_this(stack: Stack, card: Path, other: Path, admin: str, session: str) -> str:
    """What to type in another terminal: the environment, then the flows to try."""
    ctl = ".venv/bin/cardapctl"
    sim = ".venv/bin/cardap-sim"
    sensor = stack.bio.fprintd.sensor_path if stack.bio is not None else "<sensor socket>"
    admin = admin or "<token of: cardapctl --role ops login --org org-a --operator admin-1>"
    session = session or "<token of: cardapctl login --org org-a --operator op-1>"
    expires = (datetime.now() + timedelta(days=7)).date()
    return f"""
The stack is up. In another terminal, from this directory:

  export CARDAPD_SOCKET_DIR={stack.socket_dir}
  export CARDAP_SIM_CONTROL={stack.control_path}
  export FP_VIRTUAL_IMAGE={sensor}
  export ADMIN_SESSION={admin}   # admin-1, ops socket
  export CARDAPD_SESSION={session}   # op-1, kiosk socket

Try this:
  {ctl} watch --follow                 # card events as they happen (Ctrl-C ends)
  {ctl} readers                        # readers by index: --reader 0 or --reader 1
  {ctl} read-id --fresh                # read the tap-to-ID user ID now
  {ctl} diagnose                       # card fault isolation
  {ctl} aps                            # APs on the card, free space
  {ctl} loadable                       # what org-a may load, and the presets
  {ctl} load --preset new-staff        # a preset set (Type A + D), with progress bars
  {ctl} delete --aid D392F000440A0003 --reason holder_request   # asks first (-y for scripts)
  {ctl} load --ap org-a-records-d      # one AP again
  {sim} remove --slot 0                # pull the card; insert it again:
  {sim} insert --slot 0 {card}
  {sim} insert --slot 1 {other}

Enrol a new operator (administrator's session, fingerprint on the virtual sensor):
  {ctl} --session "$ADMIN_SESSION" operators add --org org-a --operator op-2 --rights load,delete
  {ctl} --session "$ADMIN_SESSION" enroll --org org-a --operator op-2 &
  {sim} finger whorl                   # once per "place your finger" prompt (5 times)
  {ctl} login --org org-a --operator op-2 --token-file op-2.token &
  {sim} finger whorl                   # the login's finger
Approve password login for an operator who cannot use the fingerprint:
  {ctl} --session "$ADMIN_SESSION" operators grant-password --org org-a \\
      --operator op-2 --reason "injured finger" --expires {expires}
  {ctl} login --org org-a --operator op-2 --password
Health and metrics:
  curl -s http://127.0.0.1:{stack.metrics_port}/healthz
  curl -s http://127.0.0.1:{stack.metrics_port}/metrics | grep cardapd_

Logs: {stack.dir}/*.log   Press Ctrl-C to stop."""


def feed(stack: Stack, prompts: Any, images: list[Any]) -> Any:
    """Present the next image at each PLACE_FINGER prompt; returns the last item."""
    last = None
    for item in prompts:  # Prompt / OperatorSession (login) or EnrollEvent (enrolment)
        prompt = item.prompt if item.DESCRIPTOR.name == "EnrollEvent" else item
        if getattr(prompt, "code", "") == "PLACE_FINGER" and images:
            stack.bio.sensor.image(images.pop(0))
        last = item
    return last


def demo_operators(stack: Stack, term: Terminal) -> tuple[str, str]:
    """Bootstrap admin-1 (the local act), enrol their finger and op-1's, log op-1 in by
    fingerprint; the sessions of admin-1 (ops socket) and op-1 (kiosk socket)."""
    from cardap.client import CardapClient
    from cardap_sim.biometric import nist_print, variants

    arch, loop = variants(nist_print("arch")), variants(nist_print("loop-right"))
    org = stack.organisation
    boot = stack.bootstrap_admin("admin-1", name="Administrator", rights="load,delete")
    with CardapClient(stack.socket("ops"), timeout=60, session=boot) as ops:
        feed(stack, ops.enroll_finger(org, "admin-1", "right-index-finger"), arch[:8])
        ops.end_session(boot)
    with CardapClient(stack.socket("ops"), timeout=60) as ops:
        admin = feed(stack, ops.authenticate(org, "admin-1"), arch[6:])
    term.say("admin-1 appointed by `cardapd bootstrap-admin` (the local act), enrolled and "
             "logged in by fingerprint (ops socket); preset new-staff set up as the default")
    with CardapClient(stack.socket("ops"), timeout=60, session=admin.token) as ops:
        ops.add_operator(org, "op-1", "Operator 1", rights=("load", "delete", "diagnose"))
        # Presets are each organisation's, on the roster: the administrator sets one up.
        ops.set_preset(org, "new-staff", ["org-a-cert-a", "org-a-records-d"],
                       make_default=True)
        feed(stack, ops.enroll_finger(org, "op-1", "right-index-finger"), loop[:8])
    with CardapClient(stack.socket("kiosk"), timeout=60) as kiosk:
        session = feed(stack, kiosk.authenticate(org, "op-1"), loop[6:])
    term.say(f"op-1 enrolled by admin-1 and logged in by fingerprint at the kiosk "
             f"(session until {session.expires_at.ToDatetime():%H:%M} UTC)")
    term.say(f"admin-1's session (ops socket): {admin.token}")
    term.say(f"op-1's session (kiosk socket): {session.token}")
    return str(admin.token), str(session.token)


DEMO_MARGIN = timedelta(hours=1)
"""How long the loading service must stay open for the demo and the flows after it."""


def service_clock(now: datetime) -> datetime | None:
    """Where the demo's loading service starts its clock: None (the real time) while it is
    open for the next DEMO_MARGIN, else its next opening after that, so that loads work
    at any hour and the terminal's measured clock offset is only the wait until then."""
    hours = ServiceHours()  # the reference service's defaults, as the stack runs it
    start = hours.next_opening(now)
    while not hours.is_open(start + DEMO_MARGIN):
        start = hours.next_opening(start + DEMO_MARGIN)
    return None if start == now else start


def run(workdir: Path, demo: bool, term: Terminal) -> int:
    """Start the stack, show it, supervise it; always stops what it started."""
    if workdir.exists():
        shutil.rmtree(workdir)
    # The production daemon (`cardapd.main`): operators log in by fingerprint through real
    # fprintd on a private bus, fed by the virtual sensor with the NIST test prints.
    opening = service_clock(datetime.now(JST))
    stack = Stack(workdir, loading=True, biometric=True,
                  fake_now=opening.isoformat() if opening is not None else None)
    if opening is not None:
        term.say(f"the loading service is closed now or closes within the hour (open "
                 f"08:00-22:00 JST, not 29 Dec - 3 Jan): its clock starts at its next "
                 f"opening, {opening:%Y-%m-%d %H:%M} JST, so `cardapctl status` shows that "
                 f"wait as the terminal's clock offset")
    term.say(f"starting pcscd + vpcd (port {stack.vpcd_port}) + virtual cards + loading "
             f"service (mTLS) + fprintd (private bus, virtual sensor) + cardapd in "
             f"{workdir} ...")
    code = EXIT_OK
    try:
        try:
            stack.start()
            show(stack, term, demo)
        except Exception as exc:  # a process died under the demo, or the demo failed
            dead = exited(stack)
            cause = (f"{dead[0]} stopped unexpectedly ({describe(dead[1])})" if dead
                     else f"the demonstration failed: {type(exc).__name__}: {exc}")
            term.say(f"{cause}; stopping the rest. Logs: {workdir}/*.log")
            return EXIT_FAILED
        code = watch(stack, term)
    except (KeyboardInterrupt, Stop):
        code = EXIT_OK
    finally:
        # One stop path: no signal interrupts it, no print can fail it.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        term.say("stopping ...")
        stack.stop()
        term.say("stopped.")
    return code


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, take the directory's lock, run."""
    p = argparse.ArgumentParser(prog="cardap_sim.demo", description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path("run"),
                   help="working directory, emptied at start (default: ./run)")
    p.add_argument("--no-demo", action="store_true",
                   help="bring the stack up with the demo card but skip the demonstration")
    args = p.parse_args(argv)
    term = Terminal()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, SIGNALS.handler)
    workdir = args.dir.resolve()
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with single_instance(workdir) as holder:
        if holder is not None:
            term.say(f"make run is already running in {workdir} (pid {holder or '?'}); "
                     "stop it first (Ctrl-C in its terminal, or kill it)")
            return EXIT_ALREADY_RUNNING
        return run(workdir, not args.no_demo, term)


if __name__ == "__main__":
    sys.exit(main())
