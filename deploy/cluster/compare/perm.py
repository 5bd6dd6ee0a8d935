"""4b: credentials / topic permissions / order / offline command delivery, via MQTT as gw001.
  python3 perm.py rabbit|nats MQTT_PORT SERVER_PORT(AMQP or NATS)
Each step uses a fresh MQTT connection so that a violation that disconnects does not hide
the next one."""
import asyncio, sys, time, uuid
import paho.mqtt.client as mqtt
from users import pw, SERVER, partition

eng, mport, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def client(user, cid=None, clean=True, password=None, inflight=20):
    st = {"msgs": [], "suback": None, "acked": set(), "disc": None}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid or f"{user}-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv311, clean_session=clean)
    c.username_pw_set(user, password or pw(user)); c.max_inflight_messages_set(inflight)
    c.on_message = lambda c, u, m: st["msgs"].append((m.topic, m.payload, m.qos))
    c.on_subscribe = lambda c, u, mid, rcs, p: st.update(suback=[int(r.value) if hasattr(r, "value") else r for r in rcs])
    c.on_publish = lambda c, u, mid, rc, p: st["acked"].add(mid)
    c.on_connect = lambda c, u, f, rc, p: st.update(connack=str(rc))
    c.on_disconnect = lambda c, u, f, rc, p: st.update(disc=str(rc))
    c.connect("127.0.0.1", mport, 30); c.loop_start()
    wait(lambda: "connack" in st, 5)
    return c, st

def wait(cond, t):
    end = time.monotonic() + t
    while time.monotonic() < end:
        if cond(): return True
        time.sleep(0.01)
    return False

def server_publish(gw, kind, payload):
    """The server's side: AMQP to amq.topic (persistent), or a NATS publish."""
    if eng == "rabbit":
        import pika
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", sport, credentials=pika.PlainCredentials(*SERVER)))
        ch = conn.channel(); ch.confirm_delivery()
        ch.basic_publish("amq.topic", f"chillcloud.v1.{gw}.{kind}", payload, pika.BasicProperties(delivery_mode=2))
        conn.close()
    else:
        import nats
        async def go():
            nc = await nats.connect(f"nats://127.0.0.1:{sport}", user=SERVER[0], password=SERVER[1])
            await nc.publish(f"chillcloud.v1.{gw}.{kind}", payload); await nc.flush(); await nc.close()
        asyncio.run(go())

def step(name, res): print(f"RESULT {eng} {name}: {res}")

# 0. wrong password
c, st = client("gw001", password="wrong"); step("bad password", f"connack={st.get('connack')} connected={c.is_connected()}"); c.loop_stop()

# 1. subscribe to own cmd, and to gw002's cmd
c, st = client("gw001"); c.subscribe("chillcloud/v1/gw001/cmd", 1); wait(lambda: st["suback"], 5)
step("subscribe own cmd", f"suback={st['suback']} connected={c.is_connected()}"); c.disconnect(); c.loop_stop()
c, st = client("gw001"); c.subscribe("chillcloud/v1/gw002/cmd", 1); wait(lambda: st["suback"] or st["disc"], 5)
time.sleep(0.5)
server_publish("gw002", "cmd", b"cmd-for-gw002"); wait(lambda: st["msgs"], 2)
step("subscribe gw002 cmd", f"suback={st['suback']} connected={c.is_connected()} disconnect={st['disc']} got={st['msgs']}"); c.loop_stop()
c, st = client("gw001"); c.subscribe("chillcloud/v1/+/cmd", 1); wait(lambda: st["suback"] or st["disc"], 5)
step("subscribe chillcloud/v1/+/cmd", f"suback={st['suback']} connected={c.is_connected()} disconnect={st['disc']}"); c.loop_stop()

# 1b. eavesdrop: gw002 subscribes to the broker-internal delivery topics while gw001 gets a cmd
c, st = client("gw002"); c.subscribe("$MQTT/sub/#", 1); wait(lambda: st["suback"] or st["disc"], 5)
g, gst = client("gw001"); g.subscribe("chillcloud/v1/gw001/cmd", 1); wait(lambda: gst["suback"], 5); time.sleep(0.3)
server_publish("gw001", "cmd", b"secret-cmd-for-gw001"); wait(lambda: st["msgs"] and gst["msgs"], 3)
step("gw002 subscribes $MQTT/sub/#", f"suback={st['suback']} gw002 got={st['msgs']} gw001 got={gst['msgs']}")
g.disconnect(); g.loop_stop(); c.loop_stop()

# 2. publish under gw002's topic
tag = uuid.uuid4().hex[:8].encode()
c, st = client("gw001"); mi = c.publish("chillcloud/v1/gw002/data", b"forged-" + tag, 1)
wait(lambda: mi.mid in st["acked"] or st["disc"], 5)
step("publish gw002/data", f"puback={mi.mid in st['acked']} connected={c.is_connected()} disconnect={st['disc']}"); c.loop_stop()
print(f"(check the store for payload forged-{tag.decode()})")

# 3. order: 2000 QoS 1 messages with a window of 20, sequence number in the payload
c, st = client("gw001", cid="gw001-order")
mids = [c.publish("chillcloud/v1/gw001/data", b"seq-%06d" % i, 1).mid for i in range(2000)]
ok = wait(lambda: len(st["acked"]) >= 2000, 60)
step("2000 ordered publishes", f"all acked={ok}"); c.disconnect(); c.loop_stop()

# 4. command to an OFFLINE gateway with a persistent session (clean_session=false)
c, st = client("gw001", cid="gw001-persist", clean=False); c.subscribe("chillcloud/v1/gw001/cmd", 1); wait(lambda: st["suback"], 5)
c.disconnect(); c.loop_stop(); time.sleep(0.5)
server_publish("gw001", "cmd", b"offline-cmd")
c, st = client("gw001", cid="gw001-persist", clean=False); wait(lambda: st["msgs"], 5)
step("cmd while offline (persistent session)", f"received={st['msgs']}")
server_publish("gw001", "cmd", b"online-cmd"); wait(lambda: len(st["msgs"]) > 1, 5)
step("cmd while online", f"received={st['msgs']}")
c.unsubscribe("chillcloud/v1/gw001/cmd"); time.sleep(0.3); c.disconnect(); c.loop_stop()
