"""A Node.js client built from the protos alone (grpc-js + proto-loader, as an integrator's
UI would be) talks to the daemon, with the one acronym style: every camel-case method name
grpc-js gives (readUserId, listCardAps) calls the current method, and the v1.0.0 names
(ReadUserID, listCardAPs) still answer the same until v2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testenv import NODE_MODULES, need

from cardap.v1 import terminal_pb2
from cardap_sim.stack import Stack, demo_user_id
from cardapd.api.roles import RENAMED

from .conftest import insert_and_wait

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("node_client.js")
SERVICE = terminal_pb2.DESCRIPTOR.services_by_name["Terminal"]


def run_node(stack: Stack) -> dict[str, dict[str, object]]:
    """The Node client's JSON answer (node_client.js) against the stack's gate and ops."""
    node = need("node")
    need("grpc-js")
    done = subprocess.run(
        [node, str(SCRIPT), str(ROOT / "proto"), str(stack.socket("gate")),
         str(stack.socket("ops"))],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"NODE_PATH": str(NODE_MODULES), "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_node_client_from_the_protos(stack: Stack) -> None:
    insert_and_wait(stack, 0, stack.demo_card())
    out = run_node(stack)
    paths = out["clientMethods"]
    # one camel-case name per current method, calling it (not its deprecated v1.0.0 twin)
    current = {m.name for m in SERVICE.methods if not m.GetOptions().deprecated}
    for name in current:
        camel = name[0].lower() + name[1:]
        assert paths[camel] == f"/cardap.v1.Terminal/{name}", (camel, paths.get(camel))
    assert "readUserId" in paths
    assert "listCardAps" in paths
    assert "loadAp" in paths
    assert not {"readUserID", "loadAP"} & set(paths)  # the odd camel cases are gone
    # the new and the old names answer alike
    new, old = out["readUserId"]["ok"], out["ReadUserID"]["ok"]
    assert isinstance(new, dict)
    assert isinstance(old, dict)
    assert new["userId"] == old["userId"] == demo_user_id()
    assert new["cardId"] == old["cardId"]
    assert new["cached"]
    assert old["cached"]
    aps, aps_old = out["listCardAps"]["ok"], out["ListCardAPs"]["ok"]
    assert aps == aps_old
    assert isinstance(aps, dict)
    assert "D392F00043010001" in {a["aid"] for a in aps["aps"]}
    # the role table applies to the new name as to the old (ListCardAps: kiosk, ops)
    assert out["listCardApsOnGate"]["code"] == "PERMISSION_DENIED"
    assert "ListCardAps" in str(out["listCardApsOnGate"]["message"])
    assert set(RENAMED) == {m.name for m in SERVICE.methods if m.GetOptions().deprecated}
