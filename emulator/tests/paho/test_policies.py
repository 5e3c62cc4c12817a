"""AWS IoT policies as `fleetprov-emulator serve` enforces them (docs/emulator-policies.md,
"Refusals on the wire"), driven with paho-mqtt.

NarrowTemplate.json's policy lets a device connect only as its thing name and publish, receive
and subscribe only under devices/<thing>/. The claim's policy is the AWS sample's: client ids
`test-*`, the fleet-provisioning topics only."""

from __future__ import annotations

import uuid


from paho_helpers import Client, Device, Server, provision

ARN = "arn:aws:iot:us-east-1:123456789012"



def device_client(server: Server, d: Device, version: int, client_id: str | None = None) -> Client:
    return Client(server, d.cert, d.key, client_id or d.thing_name, version)


def test_mqtt5_device_refused_where_its_template_policy_does_not_allow(server, narrow_device, clients):
    d = narrow_device
    mine = f"devices/{d.thing_name}"
    other = f"devices/someone-else-{uuid.uuid4().hex[:6]}"
    c = device_client(server, d, 5).connected_ok()
    clients.append(c)

    assert c.subscribe(f"{mine}/#", 1) == [1]
    assert c.subscribe(f"{other}/#", 1) == [0x87]
    # Subscribe is asked on the filter as written: `+` is not a wildcard in the policy.
    assert c.subscribe("devices/+/cmd", 1) == [0x87]

    assert c.publish(f"{other}/telemetry", "no", 1) == 0x87
    # The connection stays and an allowed publish goes through (and comes back: iot:Receive).
    assert not c.gone.is_set()
    assert c.publish(f"{mine}/telemetry", "yes", 1) == 0
    m = c.next_message()
    assert (m.topic, m.payload) == (f"{mine}/telemetry", b"yes")

    # Each refusal is logged with the action and the resource ARN.
    log = server.log()
    publish_line = f"iot:Publish on {ARN}:topic/{other}/telemetry not authorized"
    subscribe_line = f"iot:Subscribe on {ARN}:topicfilter/{other}/# not authorized"
    assert log.count(publish_line) == 1, log
    assert log.count(subscribe_line) == 1, log

    # QoS 0 has no PUBACK to carry the refusal: DISCONNECT 0x87 (the docs' choice).
    q0 = device_client(server, d, 5).connected_ok()
    clients.append(q0)
    q0.publish_nowait(f"{other}/telemetry", "no", 0)
    q0.wait_gone("DISCONNECT after a refused QoS 0 PUBLISH")
    assert q0.server_disconnect == 0x87


def test_mqtt311_device_refused_where_its_template_policy_does_not_allow(server, narrow_device, clients):
    d = narrow_device
    mine = f"devices/{d.thing_name}"
    other = f"devices/someone-else-{uuid.uuid4().hex[:6]}"
    c = device_client(server, d, 4).connected_ok()
    clients.append(c)
    assert c.subscribe(f"{mine}/#", 1) == [1]
    assert c.subscribe(f"{other}/#", 1) == [0x80]
    assert c.publish(f"{mine}/telemetry", "yes", 1) == 0
    # 3.1.1 has no negative PUBACK: the connection is closed, no PUBACK.
    mid = c.publish_nowait(f"{other}/telemetry", "no", 1)
    c.wait_gone("the server to close after a refused 3.1.1 PUBLISH")
    assert c.puback(mid) is None


def test_device_must_connect_as_its_thing_name(server, narrow_device, clients):
    d = narrow_device
    v5 = device_client(server, d, 5, client_id=f"{d.thing_name}-x")
    clients.append(v5)
    v5.connect()
    assert v5.connack_code == 0x87
    v5.wait_gone("the server to close a refused CONNECT")

    # 3.1.1: the connection is closed without a CONNACK.
    v4 = device_client(server, d, 4, client_id=f"{d.thing_name}-x")
    clients.append(v4)
    v4.connect()
    assert v4.gone.is_set() and v4.connack_code is None, f"CONNACK {v4.connack_code!r}"


def test_a_device_does_not_receive_what_its_policy_does_not_allow(server, devices, narrow_device, clients):
    """iot:Receive is asked per delivery: NarrowTemplate lets the device subscribe to fleet/#
    and receive fleet/*, but denies fleet/secret*. A withheld message is simply not sent."""
    a, _ = devices
    d = narrow_device
    sub = device_client(server, d, 5).connected_ok()
    pub = Client(server, a.cert, a.key, a.thing_name, 5).connected_ok()
    clients += [sub, pub]
    assert sub.subscribe("fleet/#", 1) == [1]
    assert pub.publish("fleet/secret/key", "withheld", 1) == 0
    assert pub.publish("fleet/all", "everyone", 1) == 0
    # Deliveries keep the publish order: the first one must be the second message.
    m = sub.next_message()
    assert (m.topic, m.payload) == ("fleet/all", b"everyone")
    assert f"iot:Receive on {ARN}:topic/fleet/secret/key not authorized" in server.log()


def test_claim_with_a_client_id_the_claim_policy_does_not_allow(server, clients):
    v5 = Client(server, server.claim_cert, server.claim_key, f"device-{uuid.uuid4().hex[:8]}", 5)
    clients.append(v5)
    v5.connect()
    assert v5.connack_code == 0x87, f"CONNACK {v5.connack_code!r}"
    v5.wait_gone("the server to close a refused CONNECT")
    assert f"iot:Connect on {ARN}:client/{v5.client_id} not authorized" in server.log()

    v4 = Client(server, server.claim_cert, server.claim_key, f"device-{uuid.uuid4().hex[:8]}", 4)
    clients.append(v4)
    v4.connect()
    assert v4.gone.is_set() and v4.connack_code is None, f"CONNACK {v4.connack_code!r}"


def test_claim_is_held_to_the_provisioning_topics(server, clients):
    c = Client(server, server.claim_cert, server.claim_key, f"test-{uuid.uuid4()}", 5).connected_ok()
    clients.append(c)
    assert c.subscribe("devices/#", 1) == [0x87]
    assert c.subscribe("$aws/provisioning-templates/NoSuchTemplate/provision/json/accepted", 1) == [0x87]
    assert c.subscribe("$aws/provisioning-templates/NarrowTemplate/provision/json/accepted", 1) == [1]
    assert c.publish("devices/claim/hello", "no", 1) == 0x87
    assert not c.gone.is_set()


def test_provisioning_over_mqtt311_and_the_claim_policy_there(server, clients):
    """The sample claim policy holds on MQTT 3.1.1 too: paho provisions over 3.1.1, and a
    subscription outside the provisioning topics gets SUBACK 0x80."""
    d = provision(server, "NarrowTemplate", uuid.uuid4().hex[:12], version=4)
    c = device_client(server, d, 4).connected_ok()
    clients.append(c)
    assert c.subscribe(f"devices/{d.thing_name}/#", 1) == [1]

    claim = Client(server, server.claim_cert, server.claim_key, f"test-{uuid.uuid4()}", 4).connected_ok()
    clients.append(claim)
    assert claim.subscribe("$aws/certificates/create/json/accepted", 1) == [1]
    assert claim.subscribe("devices/#", 1) == [0x80]
