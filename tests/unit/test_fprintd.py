"""FprintdClient against the real fprintd (virtual_image driver) on a private bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from jeepney import DBusAddress, new_method_call
from jeepney.io.blocking import open_dbus_connection

from cardap_sim.biometric import (
    BiometricStack,
    GreyImage,
    biometric_stack,
    nist_print,
    variants,
)
from cardapd.api.status import code_for
from cardapd.errors import (
    Busy,
    Cancelled,
    InvalidArgument,
    NotAuthorized,
    NotFound,
    ServiceUnavailable,
)
from cardapd.operators.biometric import authenticate
from cardapd.operators.fprintd import FprintdClient
from cardapd.operators.prompts import Prompt, PromptCode

pytestmark = [
    pytest.mark.timeout(20),
]

USER = "op-0001"
FINGER = "right-index-finger"


@pytest.fixture(scope="module")
def arch() -> list[GreyImage]:
    """The arch print and its variants: [0:6] enrol, [6:] probe."""
    return variants(nist_print("arch"))


@pytest.fixture
def stack() -> Iterator[BiometricStack]:
    """A fresh private bus + polkit stand-in + fprintd + virtual sensor."""
    with biometric_stack() as s:
        yield s


@pytest.fixture
def client(stack: BiometricStack) -> FprintdClient:
    """A client of the stack's fprintd."""
    return FprintdClient(stack.bus_address, call_timeout_s=3.0)


def feeder(stack: BiometricStack, images: list[GreyImage],
           seen: list[Prompt]) -> Callable[[Prompt], None]:
    """A prompt sink that records prompts and presents the next image on PLACE_FINGER."""
    queue = list(images)

    def on_prompt(prompt: Prompt) -> None:
        seen.append(prompt)
        if prompt.code is PromptCode.PLACE_FINGER and queue:
            stack.sensor.image(queue.pop(0))

    return on_prompt


async def enrol(stack: BiometricStack, client: FprintdClient, images: list[GreyImage]) -> None:
    """Enrol USER's FINGER from `images`."""
    await client.enroll(USER, FINGER, on_prompt=feeder(stack, images, []), timeout_s=10)


def claim_and_release(stack: BiometricStack) -> None:
    """A fresh connection can Claim (the device is free) and Release."""
    dev = DBusAddress(stack.fprintd.device_path, "net.reactivated.Fprint",
                      "net.reactivated.Fprint.Device")
    with open_dbus_connection(stack.bus_address) as conn:
        for member, sig, body in (("Claim", "s", (USER,)), ("Release", None, ())):
            reply = conn.send_and_get_reply(new_method_call(dev, member, sig, body), timeout=3)
            assert reply.header.message_type.name == "method_return", (member, reply.body)


async def test_enrol_then_variant_matches(stack: BiometricStack, client: FprintdClient,
                                          arch: list[GreyImage]) -> None:
    """Six captures enrol the finger; an unseen variant of it verifies as a match."""
    seen: list[Prompt] = []
    await client.enroll(USER, FINGER, on_prompt=feeder(stack, arch[:6], seen), timeout_s=10)
    stages = [(p.stage, p.stages) for p in seen if p.code is PromptCode.ENROLL_STAGE]
    assert stages == [(n, 6) for n in range(1, 6)]
    assert seen[-1].code is PromptCode.ENROLL_COMPLETED
    assert await client.list_enrolled(USER) == [FINGER]
    seen.clear()
    assert await client.verify(USER, on_prompt=feeder(stack, [arch[7]], seen), timeout_s=10)
    assert [p.code for p in seen] == [PromptCode.PLACE_FINGER, PromptCode.MATCHED]
    claim_and_release(stack)


async def test_other_print_does_not_match(stack: BiometricStack, client: FprintdClient,
                                          arch: list[GreyImage]) -> None:
    """A different NIST print is no match; authenticate() turns that into NotAuthorized."""
    await enrol(stack, client, arch[:6])
    seen: list[Prompt] = []
    whorl = nist_print("whorl")
    assert not await client.verify(USER, on_prompt=feeder(stack, [whorl], seen), timeout_s=10)
    assert seen[-1] == Prompt(PromptCode.NOT_MATCHED, "verify-no-match")
    with pytest.raises(NotAuthorized) as err:
        await authenticate(client, USER, on_prompt=feeder(stack, [whorl], []), timeout_s=10)
    assert err.value.reason == "FINGER_NOT_MATCHED"
    claim_and_release(stack)


async def test_retry_prompt_then_match(stack: BiometricStack, client: FprintdClient,
                                       arch: list[GreyImage]) -> None:
    """A retry from the sensor becomes RETRY_SCAN with fprintd's reason; then it matches."""
    await enrol(stack, client, arch[:6])
    seen: list[Prompt] = []

    def on_prompt(prompt: Prompt) -> None:
        seen.append(prompt)
        if prompt.code is PromptCode.PLACE_FINGER:
            stack.sensor.retry(1)
        elif prompt.code is PromptCode.RETRY_SCAN:
            stack.sensor.image(arch[6])

    assert await client.verify(USER, on_prompt=on_prompt, timeout_s=10)
    retry = next(p for p in seen if p.code is PromptCode.RETRY_SCAN)
    assert retry.reason == "verify-swipe-too-short"


async def test_no_enrolled_finger(client: FprintdClient) -> None:
    """Verifying an operator with no enrolled finger is a clear NotFound."""
    assert await client.list_enrolled(USER) == []
    with pytest.raises(NotFound) as err:
        await client.verify(USER, timeout_s=5)
    assert err.value.reason == "NO_ENROLLED_FINGER"


async def test_delete_enrolled(stack: BiometricStack, client: FprintdClient,
                               arch: list[GreyImage]) -> None:
    """Deleting an operator's prints leaves none (and deleting again is fine)."""
    await enrol(stack, client, arch[:6])
    await client.delete_enrolled(USER)
    assert await client.list_enrolled(USER) == []
    await client.delete_enrolled(USER)


async def test_cancel_mid_verify_releases(stack: BiometricStack, client: FprintdClient,
                                          arch: list[GreyImage]) -> None:
    """Cancel while waiting for the finger: Cancelled, and the claim is released."""
    await enrol(stack, client, arch[:6])
    cancel = asyncio.Event()

    def on_prompt(prompt: Prompt) -> None:
        if prompt.code is PromptCode.PLACE_FINGER:
            asyncio.get_running_loop().call_later(0.2, cancel.set)

    with pytest.raises(Cancelled) as err:
        await client.verify(USER, cancel=cancel, on_prompt=on_prompt, timeout_s=10)
    assert err.value.reason == "CANCELLED"
    claim_and_release(stack)
    assert await client.verify(USER, on_prompt=feeder(stack, [arch[6]], []), timeout_s=10)


async def test_task_cancel_releases(stack: BiometricStack, client: FprintdClient,
                                    arch: list[GreyImage]) -> None:
    """The calling task cancelled (a kiosk disconnecting) still releases the claim."""
    await enrol(stack, client, arch[:6])
    task = asyncio.create_task(client.verify(USER, timeout_s=10))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    claim_and_release(stack)


async def test_timeout_releases(stack: BiometricStack, client: FprintdClient,
                                arch: list[GreyImage]) -> None:
    """No finger within the timeout: a typed timeout, and the claim is released."""
    await enrol(stack, client, arch[:6])
    started = time.monotonic()
    with pytest.raises(Cancelled) as err:
        await client.verify(USER, timeout_s=0.7)
    assert err.value.reason == "BIOMETRIC_TIMEOUT"
    assert time.monotonic() - started < 3
    claim_and_release(stack)


async def test_fprintd_killed_mid_verify(stack: BiometricStack, client: FprintdClient,
                                         arch: list[GreyImage]) -> None:
    """fprintd crashing mid-verify is BIOMETRIC_UNAVAILABLE at once; a restart recovers."""
    await enrol(stack, client, arch[:6])

    def on_prompt(prompt: Prompt) -> None:
        if prompt.code is PromptCode.PLACE_FINGER:
            stack.fprintd.kill()

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as err:
        await client.verify(USER, on_prompt=on_prompt, timeout_s=15)
    assert err.value.reason == "BIOMETRIC_UNAVAILABLE"
    assert err.value.metadata["cause"] == "fprintd_exited"
    assert time.monotonic() - started < 3
    stack.fprintd.start()
    assert await client.verify(USER, on_prompt=feeder(stack, [arch[6]], []), timeout_s=10)


async def test_fprintd_not_running(stack: BiometricStack, client: FprintdClient) -> None:
    """With fprintd stopped, every call is BIOMETRIC_UNAVAILABLE (not_running)."""
    stack.fprintd.stop()
    with pytest.raises(ServiceUnavailable) as err:
        await client.verify(USER, timeout_s=5)
    assert err.value.metadata["cause"] == "not_running"
    with pytest.raises(ServiceUnavailable) as err:
        await client.list_enrolled(USER)
    assert err.value.metadata["cause"] == "not_running"


async def test_sensor_unplugged(stack: BiometricStack, client: FprintdClient,
                                arch: list[GreyImage]) -> None:
    """The sensor unplugged mid-verify is BIOMETRIC_UNAVAILABLE, promptly."""
    await enrol(stack, client, arch[:6])

    def on_prompt(prompt: Prompt) -> None:
        if prompt.code is PromptCode.PLACE_FINGER:
            stack.sensor.unplug()

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as err:
        await client.verify(USER, on_prompt=on_prompt, timeout_s=15)
    assert err.value.reason == "BIOMETRIC_UNAVAILABLE"
    assert err.value.metadata["cause"] == "sensor_disconnected"
    assert time.monotonic() - started < 5


async def test_no_bus() -> None:
    """No bus at the address: BIOMETRIC_UNAVAILABLE (no_bus), not a hang."""
    client = FprintdClient("unix:path=/nonexistent/bus", call_timeout_s=1)
    with pytest.raises(ServiceUnavailable) as err:
        await client.verify(USER, timeout_s=2)
    assert err.value.metadata["cause"] == "no_bus"


@pytest.mark.parametrize(("user", "finger"), [("../etc", "any"), ("Op 1", "any"),
                                              (USER, "left-toe")])
async def test_bad_names(client: FprintdClient, user: str, finger: str) -> None:
    """Unsafe operator names and unknown fingers are refused before fprintd is asked."""
    with pytest.raises(InvalidArgument):
        await client.verify(user, finger, timeout_s=2)


# ---------------------------------------------------------------- device state (metrics)


async def test_device_state_ok_then_not_running(stack: BiometricStack,
                                                client: FprintdClient) -> None:
    """GetDefaultDevice without a claim: ok; fprintd stopped: unavailable; observers told."""
    seen: list[str] = []
    client.observe(seen.append)
    assert await client.device_state() == "ok"
    claim_and_release(stack)  # the check left the device unclaimed
    stack.fprintd.stop()
    assert await client.device_state() == "unavailable"
    assert seen == ["ok", "unavailable"]


async def test_operations_report_the_device_state(stack: BiometricStack, client: FprintdClient,
                                                  arch: list[GreyImage]) -> None:
    """An operation notes ok once fprintd named the device, no_device after an unplug."""
    seen: list[str] = []
    client.observe(seen.append)
    with pytest.raises(NotFound):
        await client.verify(USER, timeout_s=5)  # nothing enrolled: the device is there
    assert seen[-1] == "ok"
    await enrol(stack, client, arch[:6])

    def on_prompt(prompt: Prompt) -> None:
        if prompt.code is PromptCode.PLACE_FINGER:
            stack.sensor.unplug()

    with pytest.raises(ServiceUnavailable):
        await client.verify(USER, on_prompt=on_prompt, timeout_s=15)
    assert seen[-1] == "no_device"
    assert await client.device_state() == "no_device"  # fprintd dropped the device


async def test_device_state_without_a_bus() -> None:
    client = FprintdClient("unix:path=/nonexistent/bus", call_timeout_s=1)
    seen: list[str] = []
    client.observe(seen.append)
    assert await client.device_state() == "unavailable"
    with pytest.raises(ServiceUnavailable):
        await client.list_enrolled(USER)
    assert seen == ["unavailable", "unavailable"]


# ---------------------------------------------------------------- fprintd's own refusals


async def test_device_claimed_by_another_program_is_biometric_busy(
        stack: BiometricStack, client: FprintdClient) -> None:
    """Another D-Bus client holds the sensor: fprintd's AlreadyInUse is BIOMETRIC_BUSY
    (UNAVAILABLE); once it lets go, the sensor is ours again."""
    dev = DBusAddress(stack.fprintd.device_path, "net.reactivated.Fprint",
                      "net.reactivated.Fprint.Device")
    with open_dbus_connection(stack.bus_address) as other:
        reply = other.send_and_get_reply(new_method_call(dev, "Claim", "s", ("someone",)),
                                         timeout=3)
        assert reply.header.message_type.name == "method_return", reply.body
        with pytest.raises(Busy) as err:
            await client.verify(USER, timeout_s=5)
        assert err.value.reason == "BIOMETRIC_BUSY"
        assert code_for(err.value) is grpc.StatusCode.UNAVAILABLE
        reply = other.send_and_get_reply(new_method_call(dev, "Release"), timeout=3)
        assert reply.header.message_type.name == "method_return", reply.body
    with pytest.raises(NotFound):  # released: the sensor is ours; nothing enrolled
        await client.verify(USER, timeout_s=5)


async def test_polkit_refusal_is_biometric_permission_denied(stack: BiometricStack,
                                                             client: FprintdClient) -> None:
    """polkit refuses the daemon the sensor: BIOMETRIC_PERMISSION_DENIED."""
    stack.polkit.allow = lambda action: False
    with pytest.raises(NotAuthorized) as err:
        await client.verify(USER, timeout_s=5)
    assert err.value.reason == "BIOMETRIC_PERMISSION_DENIED"
    assert code_for(err.value) is grpc.StatusCode.PERMISSION_DENIED
    assert any(a.startswith("net.reactivated.fprint.") for a in stack.polkit.checked)

