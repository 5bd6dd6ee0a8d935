"""Read back gw001's messages from the store and check seq-NNNNNN order and duplicates/gaps.
  python3 order.py rabbit AMQP_PORT | nats NATS_PORT   (also reports forged-* payloads)"""
import asyncio, sys
from users import SERVER, partition
eng, port = sys.argv[1], int(sys.argv[2])
bodies = []
if eng == "rabbit":
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials(*SERVER)))
    ch = conn.channel(); ch.basic_qos(prefetch_count=5000)
    for p in range(4):
        for m, props, body in ch.consume(f"chillcloud.partition.{p}", inactivity_timeout=1.0):
            if m is None: break
            bodies.append(body)
        ch.cancel()
    conn.close()
else:
    import nats
    async def go():
        nc = await nats.connect(f"nats://127.0.0.1:{port}", user=SERVER[0], password=SERVER[1]); js = nc.jetstream()
        from nats.js.api import ConsumerConfig
        sub = await js.pull_subscribe("chillcloud.v1.>", durable=None, stream="CHILLCLOUD", config=ConsumerConfig(ack_policy="none"))
        while True:
            try: ms = await sub.fetch(1000, timeout=1)
            except Exception: break
            bodies.extend(m.data for m in ms)
        await nc.close()
    asyncio.run(go())
seqs = [int(b[4:]) for b in bodies if b.startswith(b"seq-")]
inv = sum(1 for a, b in zip(seqs, seqs[1:]) if b <= a)
print(f"RESULT {eng} order: {len(seqs)} seq messages, {len(set(seqs))} distinct, {inv} out-of-order/duplicate steps; forged: {[b for b in bodies if b.startswith(b'forged')]}")
