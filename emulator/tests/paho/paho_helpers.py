"""A thin, blocking wrapper around paho-mqtt for the checks against `fleetprov-emulator serve`.

paho runs its network loop in its own thread (loop_start); every wait here has a deadline
(TIMEOUT) and gives up with an AssertionError naming what did not come. Nothing here decodes
MQTT itself: the codes and properties asserted are the ones paho decoded from the wire.

MQTT 5 clients use paho's callback API version 2 (reason codes as paho's ReasonCode, whose
.value is the byte on the wire); MQTT 3.1.1 clients use version 1, whose callbacks give the
raw CONNACK return code and SUBACK bytes (0x80 for a refused filter).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

TIMEOUT = 10.0


def wait_for(pred: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Server:
    """A running `fleetprov-emulator serve`: where it listens and its state directory's files."""

    host: str
    port: int
    state_dir: Path
    stderr_path: Path

    @property
    def ca(self) -> str:
        return str(self.state_dir / "ca.pem")

    @property
    def claim_cert(self) -> str:
        return str(self.state_dir / "claim-cert.pem")

    @property
    def claim_key(self) -> str:
        return str(self.state_dir / "claim-key.pem")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@dataclass
class Device:
    thing_name: str
    cert: str
    key: str
    certificate_id: str


class Client:
    """One paho connection. connect() returns after CONNACK or after the server closed."""

    def __init__(
        self,
        server: Server,
        cert: str,
        key: str,
        client_id: str,
        version: int = 5,
        *,
        manual_ack: bool = False,
        connect_properties: Optional[Properties] = None,
        clean_start: bool = True,
    ) -> None:
        self.server = server
        self.version = version
        self.client_id = client_id
        self._connect_properties = connect_properties
        self._clean_start = clean_start
        if version == 5:
            self.c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=manual_ack,
                reconnect_on_failure=False,
            )
        else:
            self.c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION1,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=clean_start,
                manual_ack=manual_ack,
                reconnect_on_failure=False,
            )
        self.c.tls_set(ca_certs=server.ca, certfile=cert, keyfile=key)
        self._lock = threading.Lock()
        self.connack_event = threading.Event()
        self.connack_code: Optional[int] = None
        self.connack_properties: Optional[Properties] = None
        self.session_present: Optional[bool] = None
        self.gone = threading.Event()
        # MQTT 5: the reason code of the server's DISCONNECT packet (None: closed without one).
        self.server_disconnect: Optional[int] = None
        self.server_disconnect_properties: Optional[Properties] = None
        self.messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
        self._subacks: dict[int, list[int]] = {}
        self._pubacks: dict[int, int] = {}
        # Manual-ack bookkeeping: deliveries received and acks sent, and the most that were
        # unacknowledged when a delivery arrived.
        self.received = 0
        self.acked = 0
        self.max_unacked = 0
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message

    # --- paho callbacks (paho's thread) ---

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        if self.version == 5:
            self.connack_code = rc.value
            self.session_present = bool(flags.session_present)
            self.connack_properties = properties
        else:
            self.connack_code = int(rc)
            self.session_present = bool(flags["session present"])
        self.connack_event.set()

    def _on_disconnect(self, client: Any, userdata: Any, *args: Any) -> None:
        if self.version == 5:
            flags, reason, properties = args
            if flags.is_disconnect_packet_from_server:
                self.server_disconnect = reason.value
                self.server_disconnect_properties = properties
        self.gone.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, properties: Any = None) -> None:
        with self._lock:
            if self.version == 5:
                self._subacks[mid] = [c.value for c in codes]
            else:
                self._subacks[mid] = list(codes)

    def _on_publish(self, client: Any, userdata: Any, mid: int, *args: Any) -> None:
        with self._lock:
            self._pubacks[mid] = args[0].value if self.version == 5 else 0

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            if message.qos > 0:
                self.received += 1
                self.max_unacked = max(self.max_unacked, self.received - self.acked)
        self.messages.put(message)

    # --- the test's side ---

    def connect(self) -> "Client":
        """Connect and wait for CONNACK or for the server to close the connection."""
        kwargs: dict[str, Any] = {"keepalive": 30}
        if self.version == 5:
            kwargs["clean_start"] = self._clean_start
            kwargs["properties"] = self._connect_properties
        self.c.connect(self.server.host, self.server.port, **kwargs)
        self.c.loop_start()
        wait_for(
            lambda: self.connack_event.is_set() or self.gone.is_set(),
            f"CONNACK or close for {self.client_id!r}",
        )
        return self

    def connected_ok(self) -> "Client":
        self.connect()
        assert self.connack_code == 0, f"{self.client_id!r}: CONNACK {self.connack_code!r}"
        return self

    def close(self) -> None:
        try:
            if not self.gone.is_set():
                self.c.disconnect()
                self.gone.wait(TIMEOUT)
        finally:
            self.c.loop_stop()

    def subscribe(self, topic_filter: str, qos: int = 1, **options: Any) -> list[int]:
        """SUBSCRIBE one filter; returns the SUBACK's codes (MQTT 5 reason codes, 3.1.1 bytes)."""
        if self.version == 5:
            rc, mid = self.c.subscribe(topic_filter, options=SubscribeOptions(qos=qos, **options))
        else:
            rc, mid = self.c.subscribe(topic_filter, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {rc}"
        wait_for(lambda: mid in self._subacks or self.gone.is_set(), f"SUBACK for {topic_filter!r}")
        assert mid in self._subacks, f"connection closed instead of a SUBACK for {topic_filter!r}"
        return self._subacks[mid]

    def publish_nowait(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        properties: Optional[Properties] = None,
    ) -> int:
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish not sent: {info.rc}"
        return info.mid

    def puback(self, mid: int) -> Optional[int]:
        """Wait for PUBACK of mid: its reason code (0 on 3.1.1), or None if the connection closed."""
        wait_for(lambda: mid in self._pubacks or self.gone.is_set(), f"PUBACK of message {mid}")
        with self._lock:
            return self._pubacks.get(mid)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        properties: Optional[Properties] = None,
    ) -> Optional[int]:
        """PUBLISH; for QoS 1 wait for the PUBACK and return its code (None if closed instead)."""
        mid = self.publish_nowait(topic, payload, qos, retain, properties)
        if qos == 0:
            return None
        return self.puback(mid)

    def ack(self, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.c.ack(message.mid, message.qos)
            self.acked += 1

    def next_message(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r}: no message within {timeout} s") from None

    def wait_gone(self, what: str) -> None:
        wait_for(self.gone.is_set, what)


def connect_properties(**values: Any) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def provision(server: Server, template: str, serial: str, location: str = "Seattle", version: int = 5) -> Device:
    """Fleet provisioning with paho as the claim client: CreateKeysAndCertificate, then
    RegisterThing with the template's parameters. The claim's client id starts with `test-`,
    as the sample claim policy requires."""
    claim = Client(server, server.claim_cert, server.claim_key, f"test-{uuid.uuid4()}", version)
    claim.connected_ok()
    try:
        create = "$aws/certificates/create/json"
        register = f"$aws/provisioning-templates/{template}/provision/json"
        for t in (create, register):
            for reply in ("accepted", "rejected"):
                codes = claim.subscribe(f"{t}/{reply}", 1)
                assert codes == [1], f"claim SUBSCRIBE {t}/{reply}: {codes}"

        def call(topic: str, request: dict[str, Any]) -> dict[str, Any]:
            assert claim.publish(topic, json.dumps(request), 1) == 0
            m = claim.next_message()
            body = json.loads(m.payload)
            assert m.topic == f"{topic}/accepted", f"{m.topic}: {body}"
            return body

        keys = call(create, {})
        for field in ("certificateId", "certificatePem", "privateKey", "certificateOwnershipToken"):
            assert keys.get(field), f"CreateKeysAndCertificate reply lacks {field}: {sorted(keys)}"
        thing = call(
            register,
            {
                "certificateOwnershipToken": keys["certificateOwnershipToken"],
                "parameters": {"SerialNumber": serial, "DeviceLocation": location},
            },
        )
    finally:
        claim.close()
    name = thing["thingName"]
    out = server.state_dir.parent / "devices"
    out.mkdir(exist_ok=True)
    cert = out / f"{name}.cert.pem"
    key = out / f"{name}.key.pem"
    cert.write_text(keys["certificatePem"])
    key.write_text(keys["privateKey"])
    key.chmod(0o600)
    return Device(name, str(cert), str(key), keys["certificateId"])
