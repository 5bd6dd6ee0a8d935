"""4c: retained birth and last will when the node holding the gateway's connection is killed.
  python3 retain.py rabbit|nats GW_NODE PID_OF_GW_NODE
gw003 connects to node GW_NODE with a will on .../death, publishes a retained birth (QoS 1),
observers (admin / server user) subscribe on another node before and after kill -9 of GW_NODE."""
import asyncio, os, signal, sys, time, uuid
import paho.mqtt.client as mqtt
from users import pw, SERVER, partition
eng, node, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
BP = 30000 if eng == "rabbit" else 40000
mport = lambda i: BP + 10 + i - 1
OBS = ("admin", "admin") if eng == "rabbit" else SERVER
other = node % 3 + 1; tag = uuid.uuid4().hex[:6]; G = "gw003"

def wait(cond, t):
    end = time.monotonic() + t
    while time.monotonic() < end and not cond(): time.sleep(0.02)
    return cond()

def observer(port, topic, name):
    st = {"msgs": []}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"obs-{name}-{tag}", protocol=mqtt.MQTTv311)
    c.username_pw_set(*OBS)
    c.on_message = lambda c, u, m: st["msgs"].append((m.topic.split("/")[-1], m.payload.decode(), m.retain))
    c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
    c.connect("127.0.0.1", port, 30); c.loop_start(); return c, st

def in_store(kind, payload):
    if eng == "rabbit":
        import pika
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", BP + other - 1, credentials=pika.PlainCredentials(*SERVER)))
        ch = conn.channel(); ch.basic_qos(prefetch_count=10000); found = False
        for m, p, body in ch.consume(f"chillcloud.partition.{partition(G, 4)}", inactivity_timeout=1.5):
            if m is None: break
            found |= body == payload.encode()
        conn.close(); return found
    async def go():
        import nats
        nc = await nats.connect(f"nats://127.0.0.1:{BP + other - 1}", user=SERVER[0], password=SERVER[1]); js = nc.jetstream()
        try: m = await js.get_last_msg("CHILLCLOUD", f"chillcloud.v1.{G}.{kind}"); r = m.data == payload.encode()
        except Exception: r = False
        await nc.close(); return r
    return asyncio.run(go())

g = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{G}-{tag}", protocol=mqtt.MQTTv311)
g.username_pw_set(G, pw(G)); g.will_set(f"chillcloud/v1/{G}/death", f"dead-{tag}", 1, retain=False)
acked = set(); g.on_publish = lambda c, u, mid, rc, p: acked.add(mid)
g.connect("127.0.0.1", mport(node), keepalive=5); g.loop_start(); wait(g.is_connected, 5)
mi = g.publish(f"chillcloud/v1/{G}/birth", f"birth-{tag}", 1, retain=True)
print(f"RESULT {eng} birth PUBACK: {wait(lambda: mi.mid in acked, 10)} (gateway on n{node})")
time.sleep(1)
for i in (node, other):
    o, st = observer(mport(i), f"chillcloud/v1/{G}/birth", f"pre{i}"); wait(lambda: st["msgs"], 3)
    print(f"RESULT {eng} before kill, subscriber on n{i} gets retained birth: {st['msgs']}"); o.disconnect(); o.loop_stop()
od, dst = observer(mport(other), f"chillcloud/v1/{G}/death", "death"); time.sleep(1)
os.kill(pid, signal.SIGKILL); g.loop_stop()
print(f"killed n{node} (pid {pid})")
wait(lambda: dst["msgs"], 20)
print(f"RESULT {eng} will (death) seen by MQTT subscriber on n{other} within 20 s: {dst['msgs']}")
print(f"RESULT {eng} will in replicated store: {in_store('death', 'dead-' + tag)}; birth in store: {in_store('birth', 'birth-' + tag)}")
o, st = observer(mport(other), f"chillcloud/v1/{G}/birth", "post"); wait(lambda: st["msgs"], 5)
print(f"RESULT {eng} after kill, new subscriber on n{other} gets retained birth: {st['msgs']}"); o.disconnect(); o.loop_stop()
od.disconnect(); od.loop_stop()
print(f"TAG {tag}")
