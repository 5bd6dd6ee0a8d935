"""4d load: PROCS processes x CLIENTS gateways, each publishing 300-byte QoS 1 messages on
chillcloud/v1/<gw>/data with at most WINDOW unacknowledged, for DURATION s, spread round-robin
over the MQTT ports. Payload = 8-byte send time (for end-to-end latency) + padding.
  python3 load.py PORTS(comma) PROCS CLIENTS DURATION [WINDOW [RATE]]  -> "RESULT acks ... msgs/s"
RATE > 0: paced, each client sends RATE msgs/s (for latency at a load the consumer keeps up with).
Counts PUBACKs between t=WARM and t=DURATION only."""
import multiprocessing as mp, struct, sys, threading, time
import paho.mqtt.client as mqtt
from users import gw, pw

WARM = 5.0

def worker(first, n, ports, t0, dur, window, q, rate=0):
    pad = b"x" * 292
    acked = [0]; lock = threading.Lock(); clients = []
    def mk(i):
        g = gw(i); topic = f"chillcloud/v1/{g}/data"
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{g}-load", protocol=mqtt.MQTTv311)
        c.username_pw_set(g, pw(g)); c.max_inflight_messages_set(window)
        def send(): c.publish(topic, struct.pack("!d", time.time()) + pad, 1)
        def on_pub(c_, u, mid, rc, p):
            now = time.time()
            if t0 + WARM <= now < t0 + dur:
                with lock: acked[0] += 1
            if now < t0 + dur and not rate: send()
        def on_conn(c_, u, f, rc, p):
            if not rate:
                for _ in range(window): send()
        c.send = send
        c.on_publish = on_pub; c.on_connect = on_conn
        c.connect("127.0.0.1", ports[i % len(ports)], 60)
        return c
    while time.time() < t0: time.sleep(0.01)
    for i in range(first, first + n):
        c = mk(i); c.loop_start(); clients.append(c)
    if rate:   # paced mode: every client sends `rate` msgs/s (the window still caps in-flight)
        nxt = time.time()
        while time.time() < t0 + dur:
            for c in clients: c.send()
            nxt += 1.0 / rate; time.sleep(max(0, nxt - time.time()))
    time.sleep(max(0, t0 + dur - time.time()) + 0.5)
    for c in clients: c.disconnect(); c.loop_stop()
    q.put(acked[0])

if __name__ == "__main__":
    ports = [int(p) for p in sys.argv[1].split(",")]; procs, clients, dur = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    window = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0
    t0 = time.time() + 1; q = mp.Queue(); per = clients // procs
    ps = [mp.Process(target=worker, args=(1 + k * per, per if k < procs - 1 else clients - k * per, ports, t0, dur, window, q, rate)) for k in range(procs)]
    for p in ps: p.start()
    total = sum(q.get() for _ in ps)
    for p in ps: p.join()
    print(f"RESULT acks {total} in {dur - WARM:.0f} s = {total / (dur - WARM):.0f} msgs/s (PUBACKed, {clients} clients, window {window})")
