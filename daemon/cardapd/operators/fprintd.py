"""An asyncio client of the real fprintd (`net.reactivated.Fprint`) over D-Bus (jeepney).

Each operation opens its own bus connection, claims the device for the operator, drives
enrolment or verification from fprintd's signals (turned into `Prompt`s), and always
stops the action, releases the claim and closes the connection: on success, error,
cancel, timeout, and task cancellation alike. Closing the connection is the backstop:
fprintd drops the claim of a client that leaves the bus. fprintd leaving the bus (its
name's owner changes) or the bus connection closing ends the wait with a typed error.

Every operation also tells its observers (`observe`) what it learnt about the device:
"ok" once fprintd named a default device, "no_device" / "unavailable" from the failures
that mean so. `device_state` checks without claiming anything (GetDefaultDevice only).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from jeepney import DBusAddress, HeaderFields, MatchRule, Message, new_method_call
from jeepney.bus_messages import message_bus

from cardapd.errors import (
    AlreadyExists,
    Busy,
    Cancelled,
    CardapError,
    InvalidArgument,
    NotAuthorized,
    NotFound,
    ResourceExhausted,
    ServiceUnavailable,
)
from cardapd.operators.biometric import ANY_FINGER, check_finger, check_user
from cardapd.operators.dbus import LOST, DBusCallError, Link, LinkLost
from cardapd.operators.prompts import Prompt, PromptCode, PromptSink

SERVICE = "net.reactivated.Fprint"
DEVICE_IFACE = f"{SERVICE}.Device"
MANAGER = DBusAddress("/net/reactivated/Fprint/Manager", SERVICE, f"{SERVICE}.Manager")
PROPS_IFACE = "org.freedesktop.DBus.Properties"
UNAVAILABLE = "BIOMETRIC_UNAVAILABLE"

_RETRY = {"retry-scan", "swipe-too-short", "finger-not-centered"}
# ServiceUnavailable causes (see `unavailable`) that say what state the device is in; the
# others (fprintd_error, sensor_error) come from a device that is there.
_NO_DEVICE = frozenset({"no_device", "sensor_disconnected"})
_UNREACHABLE = frozenset({"no_bus", "not_running", "bus_lost", "no_answer",
                          "fprintd_exited", "dbus_error"})
_FPRINT_ERRORS: dict[str, tuple[type[CardapError], str]] = {
    "NoEnrolledPrints": (NotFound, "NO_ENROLLED_FINGER"),
    "AlreadyInUse": (Busy, "BIOMETRIC_BUSY"),
    "PermissionDenied": (NotAuthorized, "BIOMETRIC_PERMISSION_DENIED"),
    "InvalidFingername": (InvalidArgument, "INVALID_FINGER"),
}


def unavailable(cause: str, detail: str = "") -> ServiceUnavailable:
    """ServiceUnavailable(BIOMETRIC_UNAVAILABLE) with the cause in metadata."""
    text = f"the fingerprint service is unavailable ({cause})"
    return ServiceUnavailable(f"{text}: {detail}" if detail else text, reason=UNAVAILABLE,
                              metadata={"cause": cause})


def map_error(exc: DBusCallError | LinkLost | TimeoutError) -> CardapError:
    """A D-Bus failure as a cardapd error."""
    if isinstance(exc, LinkLost):
        return unavailable("bus_lost", str(exc))
    if isinstance(exc, TimeoutError):
        return unavailable("no_answer")
    prefix, _, short = exc.name.rpartition(".")
    if prefix == f"{SERVICE}.Error" and short in _FPRINT_ERRORS:
        cls, reason = _FPRINT_ERRORS[short]
        return cls(exc.message or short, reason=reason)
    if short == "NoSuchDevice":
        return unavailable("no_device", exc.message)
    if prefix == "org.freedesktop.DBus.Error":
        not_running = short in ("ServiceUnknown", "NameHasNoOwner")
        return unavailable("not_running" if not_running else "dbus_error", exc.message)
    return unavailable("fprintd_error", f"{short}: {exc.message}")


def device_state_of(exc: BaseException) -> str | None:
    """The device state a failed operation reveals: "no_device", "unavailable", or None
    when the failure says nothing about the device (a wrong finger, a timeout, …)."""
    if not isinstance(exc, ServiceUnavailable) or exc.reason != UNAVAILABLE:
        return None
    cause = exc.metadata.get("cause", "")
    if cause in _NO_DEVICE:
        return "no_device"
    if cause in _UNREACHABLE:
        return "unavailable"
    return None


def _fail(result: str) -> CardapError:
    """The error for a final (done) enroll/verify result that is neither match nor success."""
    kind = result.split("-", 1)[1] if "-" in result else result
    if kind == "disconnected":
        return unavailable("sensor_disconnected")
    if kind == "data-full":
        return ResourceExhausted("the sensor's storage is full",
                                 reason="BIOMETRIC_STORAGE_FULL")
    if kind == "duplicate":
        return AlreadyExists("this finger is already enrolled",
                             reason="FINGER_ALREADY_ENROLLED")
    if kind == "failed":
        return InvalidArgument("enrolment failed; start again", reason="ENROLL_FAILED")
    return unavailable("sensor_error", result)


def timed_out(timeout_s: float) -> Cancelled:
    """The error when no decision came within the timeout."""
    return Cancelled(f"no finger decision within {timeout_s:g} s", reason="BIOMETRIC_TIMEOUT",
                     metadata={"timeout_s": f"{timeout_s:g}"})


@dataclass
class _Claim:
    """A claimed device on one connection, and what the wait loop needs."""

    link: Link
    device: DBusAddress
    owner: str
    call_timeout: float
    on_prompt: PromptSink | None
    last: PromptCode | None = None
    action: str = ""  # "Verify" / "Enroll" while started
    claimed: bool = True

    async def call(self, member: str, signature: str | None = None,
                   body: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        """Call a Device method; failures mapped to cardapd errors."""
        try:
            return await self.link.call(
                new_method_call(self.device, member, signature, body), self.call_timeout)
        except (DBusCallError, LinkLost, TimeoutError) as exc:
            raise map_error(exc) from exc

    async def prompt(self, prompt: Prompt, dedupe: bool = False) -> None:
        """Hand a prompt to the sink (a repeat PLACE_FINGER is dropped when `dedupe`)."""
        if dedupe and prompt.code == self.last:
            return
        self.last = prompt.code
        if self.on_prompt is not None:
            result = self.on_prompt(prompt)
            if inspect.isawaitable(result):
                await result

    async def start(self, action: str, arg: str) -> None:
        """VerifyStart / EnrollStart, remembered so cleanup stops it."""
        await self.call(f"{action}Start", "s", (arg,))
        self.action = action
        await self.prompt(Prompt(PromptCode.PLACE_FINGER), dedupe=True)

    async def stop(self) -> None:
        """VerifyStop / EnrollStop if an action is running."""
        action, self.action = self.action, ""
        if action:
            await self.call(f"{action}Stop")

    async def next_status(self, member: str, deadline: float, timeout_s: float,
                          cancel: asyncio.Event | None) -> tuple[str, bool]:
        """The next `member` signal's (result, done); prompts for property changes."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise timed_out(timeout_s)
            msg = await _next_signal(self.link, remaining, cancel)
            if msg is None:
                raise timed_out(timeout_s)
            if msg is LOST:
                raise unavailable("bus_lost", "the bus connection closed")
            status = await self._handle(msg, member)
            if status is not None:
                return status

    async def _handle(self, msg: Message, member: str) -> tuple[str, bool] | None:
        """Interpret one signal: the status, or None after prompting / ignoring it."""
        fields = msg.header.fields
        name = fields.get(HeaderFields.member)
        if name == "NameOwnerChanged" and msg.body[0] == SERVICE and msg.body[2] != self.owner:
            raise unavailable("fprintd_exited", "fprintd left the bus")
        if fields.get(HeaderFields.path) != self.device.object_path:
            return None
        if name == member and fields.get(HeaderFields.interface) == DEVICE_IFACE:
            return str(msg.body[0]), bool(msg.body[1])
        if name == "PropertiesChanged" and msg.body[0] == DEVICE_IFACE:
            changed = msg.body[1]
            needed = changed.get("finger-needed")
            if needed is not None and needed[1]:
                await self.prompt(Prompt(PromptCode.PLACE_FINGER), dedupe=True)
        return None


async def _next_signal(link: Link, limit_s: float, cancel: asyncio.Event | None) -> Any:
    """The next queued signal (or LOST); None on timeout; Cancelled when `cancel` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("the operation was cancelled")
    get = asyncio.ensure_future(link.signals.get())
    waiters: set[asyncio.Future[Any]] = {get}
    if cancel is not None:
        waiters.add(asyncio.ensure_future(cancel.wait()))
    try:
        done, _ = await asyncio.wait(waiters, timeout=limit_s,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            if not w.done():
                w.cancel()
    if get in done:
        return get.result()
    if done:
        if not get.cancelled() and get.done():
            link.signals.put_nowait(get.result())
        raise Cancelled("the operation was cancelled")
    return None


class FprintdClient:
    """Enrol and verify operators' fingers through fprintd on the bus at `bus_address`."""

    def __init__(self, bus_address: str, *, call_timeout_s: float = 5.0) -> None:
        self.bus_address = bus_address
        self.call_timeout_s = call_timeout_s
        self._observers: list[Callable[[str], None]] = []

    def observe(self, observer: Callable[[str], None]) -> None:
        """Call `observer` with the device state ("ok", "no_device", "unavailable")
        whenever an operation or a check learns it."""
        self._observers.append(observer)

    def _note(self, state: str) -> None:
        for observer in self._observers:
            observer(state)

    @contextlib.contextmanager
    def _noting(self) -> Iterator[None]:
        """Tell the observers what a failure inside reveals about the device."""
        try:
            yield
        except CardapError as exc:
            state = device_state_of(exc)
            if state is not None:
                self._note(state)
            raise

    async def device_state(self) -> str:
        """Check the device without claiming it (GetDefaultDevice on a new connection)."""
        try:
            with self._noting():
                link = await self._open()
                try:
                    await self._bus_call(link, new_method_call(MANAGER, "GetDefaultDevice"))
                finally:
                    await link.close()
        except CardapError as exc:
            return device_state_of(exc) or "unavailable"
        self._note("ok")
        return "ok"

    async def _open(self) -> Link:
        """A new connection to the bus (ServiceUnavailable if the bus is not there)."""
        try:
            return await Link.open(self.bus_address, self.call_timeout_s)
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            raise unavailable("no_bus", type(exc).__name__) from exc

    async def _bus_call(self, link: Link, msg: Message) -> tuple[Any, ...]:
        """A call whose failure maps to a cardapd error."""
        try:
            return await link.call(msg, self.call_timeout_s)
        except (DBusCallError, LinkLost, TimeoutError) as exc:
            raise map_error(exc) from exc

    async def _device(self, link: Link) -> tuple[DBusAddress, str]:
        """Watch fprintd's signals and name; return the default device and fprintd's owner."""
        owner_rule = MatchRule(type="signal", sender="org.freedesktop.DBus",
                               interface="org.freedesktop.DBus", member="NameOwnerChanged",
                               path="/org/freedesktop/DBus")
        owner_rule.add_arg_condition(0, SERVICE)
        # The bus rule names the service; the local check must not (signals carry ":1.x").
        for rule in (MatchRule(type="signal", sender=SERVICE), owner_rule):
            await self._bus_call(link, message_bus.AddMatch(rule))
        owner = (await self._bus_call(link, message_bus.GetNameOwner(SERVICE)))[0]
        path = (await self._bus_call(link, new_method_call(MANAGER, "GetDefaultDevice")))[0]
        self._note("ok")
        return DBusAddress(str(path), SERVICE, DEVICE_IFACE), str(owner)

    @contextlib.asynccontextmanager
    async def _claimed(self, user: str,
                       on_prompt: PromptSink | None) -> AsyncIterator[_Claim]:
        """Claim the device for `user`; always stop, release and disconnect after.

        Failures of the claim and of the caller's body are noted (see `observe`)."""
        with self._noting():
            link = await self._open()
            claim: _Claim | None = None
            try:
                device, owner = await self._device(link)
                pending = _Claim(link, device, owner, self.call_timeout_s, on_prompt)
                await pending.call("Claim", "s", (user,))
                claim = pending
                yield claim
            finally:
                if claim is not None:
                    await _release(claim)
                await link.close()

    async def enroll(self, user: str, finger: str, *, cancel: asyncio.Event | None = None,
                     on_prompt: PromptSink | None = None, timeout_s: float = 60.0) -> None:
        """Enrol `finger` of `user`: prompts per stage; returns when enrol completes."""
        check_user(user)
        check_finger(finger)
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with self._claimed(user, on_prompt) as claim:
            stages = await self._stages(claim)
            await claim.start("Enroll", finger)
            passed = 0
            while True:
                result, done = await claim.next_status("EnrollStatus", deadline, timeout_s,
                                                       cancel)
                kind = result.removeprefix("enroll-")
                if kind == "completed":
                    await claim.stop()
                    await claim.prompt(Prompt(PromptCode.ENROLL_COMPLETED, result,
                                              stages, stages))
                    return
                if kind == "stage-passed":
                    passed += 1
                    await claim.prompt(Prompt(PromptCode.ENROLL_STAGE, result, passed,
                                              max(stages, passed)))
                elif kind in _RETRY and not done:
                    await claim.prompt(Prompt(PromptCode.RETRY_SCAN, result))
                elif kind == "remove-and-retry" and not done:
                    await claim.prompt(Prompt(PromptCode.REMOVE_FINGER, result))
                elif done:
                    raise await self._final_error(claim, result)

    async def _final_error(self, claim: _Claim, result: str) -> CardapError:
        """The error for a failed final result; an unknown error with the device gone is
        an unplugged sensor (fprintd 1.94 reports removal as *-unknown-error, and drops
        the device once it is released)."""
        if result.endswith("unknown-error"):
            await _release(claim)
            for _ in range(5):
                try:
                    devices = (await self._bus_call(
                        claim.link, new_method_call(MANAGER, "GetDevices")))[0]
                except CardapError:
                    break
                if claim.device.object_path not in devices:
                    return unavailable("sensor_disconnected", result)
                await asyncio.sleep(0.1)
        return _fail(result)

    async def _stages(self, claim: _Claim) -> int:
        """The device's number of enrol stages (0 if it does not say)."""
        props = DBusAddress(claim.device.object_path, SERVICE, PROPS_IFACE)
        try:
            reply = await self._bus_call(claim.link, new_method_call(
                props, "Get", "ss", (DEVICE_IFACE, "num-enroll-stages")))
        except ServiceUnavailable:
            return 0
        return int(reply[0][1])

    async def verify(self, user: str, finger: str = ANY_FINGER, *, timeout_s: float = 30.0,
                     cancel: asyncio.Event | None = None,
                     on_prompt: PromptSink | None = None) -> bool:
        """Whether the presented finger matches `user`'s prints (MATCHED / NOT_MATCHED)."""
        check_user(user)
        check_finger(finger, allow_any=True)
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with self._claimed(user, on_prompt) as claim:
            await claim.start("Verify", finger)
            while True:
                result, done = await claim.next_status("VerifyStatus", deadline, timeout_s,
                                                       cancel)
                kind = result.removeprefix("verify-")
                if kind in ("match", "no-match"):
                    await claim.stop()
                    matched = kind == "match"
                    code = PromptCode.MATCHED if matched else PromptCode.NOT_MATCHED
                    await claim.prompt(Prompt(code, result))
                    return matched
                if kind in _RETRY or kind == "remove-and-retry":
                    code = PromptCode.RETRY_SCAN if kind in _RETRY else PromptCode.REMOVE_FINGER
                    await claim.prompt(Prompt(code, result))
                    if done:  # the device ended the attempt: start a new one
                        await claim.stop()
                        await claim.start("Verify", finger)
                elif done:
                    raise await self._final_error(claim, result)

    async def list_enrolled(self, user: str) -> list[str]:
        """The fingers enrolled for `user` (no claim needed; empty when none)."""
        check_user(user)
        with self._noting():
            link = await self._open()
            try:
                device, _ = await self._device(link)
                try:
                    reply = await self._bus_call(link, new_method_call(
                        device, "ListEnrolledFingers", "s", (user,)))
                except NotFound:
                    return []
                return [str(f) for f in reply[0]]
            finally:
                await link.close()

    async def delete_enrolled(self, user: str) -> None:
        """Delete every print of `user` (nothing to do when none)."""
        check_user(user)
        async with self._claimed(user, None) as claim:
            with contextlib.suppress(NotFound):
                await claim.call("DeleteEnrolledFingers2")


async def _release(claim: _Claim) -> None:
    """Stop the running action and release the claim (once); errors here are swallowed."""
    with contextlib.suppress(CardapError):
        await claim.stop()
    if claim.claimed:
        claim.claimed = False
        with contextlib.suppress(CardapError):
            await claim.call("Release")
