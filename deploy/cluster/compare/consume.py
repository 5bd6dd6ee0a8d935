"""4d consumer: drain the store for DURATION s, manual acks, end-to-end latency from payload.
  python3 consume.py rabbit AMQP_PORT DURATION      (one channel per partition queue, prefetch 2000,
                                                     multiple-ack every 200 deliveries)
  python3 consume.py nats NATS_PORT DURATION        (durable pull consumer, batches of 500, ack each)
  python3 consume.py mosquitto MQTT_PORT DURATION   (MQTT QoS 1 subscriber, as the server does today)
Only messages received in [WARM, DURATION) count."""
import asyncio, struct, sys, time
from users import SERVER
eng, port, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
WARM = 5.0; t0 = time.time() + 1; lat = []; n = [0]
def seen(body):
    now = time.time()
    if t0 + WARM <= now < t0 + dur:
        n[0] += 1
        if len(body) >= 8: lat.append(now - struct.unpack("!d", body[:8])[0])

if eng == "rabbit":
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials(*SERVER)))
    for k in range(4):
        ch = conn.channel(); ch.basic_qos(prefetch_count=2000); cnt = [0]
        def cb(ch, m, props, body, cnt=cnt):
            seen(body); cnt[0] += 1
            if cnt[0] % 200 == 0: ch.basic_ack(m.delivery_tag, multiple=True)
        ch.basic_consume(f"chillcloud.partition.{k}", cb)
    while time.time() < t0 + dur: conn.process_data_events(time_limit=0.2)
    conn.close()
elif eng == "nats":
    import nats
    from nats.js.api import ConsumerConfig
    async def go():
        nc = await nats.connect(f"nats://127.0.0.1:{port}", user=SERVER[0], password=SERVER[1]); js = nc.jetstream()
        sub = await js.pull_subscribe("chillcloud.v1.*.data", durable="bench", stream="CHILLCLOUD", config=ConsumerConfig(max_ack_pending=20000))
        while time.time() < t0 + dur:
            try: ms = await sub.fetch(500, timeout=0.5)
            except Exception: continue
            for m in ms: seen(m.data); await m.ack()
        await nc.close()
    asyncio.run(go())
else:
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chillcloud-server", protocol=mqtt.MQTTv311, clean_session=False)
    c.username_pw_set(*SERVER); c.max_inflight_messages_set(1000)
    c.on_message = lambda c, u, m: seen(m.payload)
    c.on_connect = lambda c, u, f, rc, p: c.subscribe("chillcloud/v1/+/data", 1)
    c.connect("127.0.0.1", port, 60); c.loop_start()
    while time.time() < t0 + dur: time.sleep(0.2)
    c.disconnect(); c.loop_stop()
lat.sort(); q = lambda f: f"{1000 * lat[int(f * (len(lat) - 1))]:.0f} ms" if lat else "n/a"
print(f"RESULT consumed {n[0]} in {dur - WARM:.0f} s = {n[0] / (dur - WARM):.0f} msgs/s, latency p50 {q(0.5)} p95 {q(0.95)} p99 {q(0.99)}")
