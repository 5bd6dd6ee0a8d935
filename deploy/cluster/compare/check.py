"""Is PAYLOAD in the replicated store?  python3 check.py rabbit AMQP_PORT GW PAYLOAD [P]
                                         python3 check.py nats NATS_PORT GW PAYLOAD
RabbitMQ: browse the gateway's partition quorum queue (consume without ack, then requeue);
NATS: look at the stream CHILLCLOUD. Also `python3 check.py nats-setup PORT` creates the stream
(replicas 3) and `rabbit-purge`/`nats-purge` empty the store."""
import asyncio, sys
from users import SERVER, partition

def rabbit(port, gw, payload, p=4, purge=False):
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials(*SERVER), blocked_connection_timeout=10))
    ch = conn.channel(); q = f"chillcloud.partition.{partition(gw, p)}"
    if purge: ch.queue_purge(q); print("purged", q); conn.close(); return
    found, n = False, 0
    # basic.get is refused on quorum queues with single active consumer (RESOURCE_LOCKED):
    # browse with a consumer, no acks; closing the channel requeues everything.
    ch.basic_qos(prefetch_count=10000)
    for m, props, body in ch.consume(q, inactivity_timeout=1.0):
        if m is None: break
        n += 1; found |= body == payload.encode()
    print(f"RESULT {'found' if found else 'NOT found'} ({n} messages in {q})"); conn.close()

async def nats(port, gw, payload, cmd):
    import nats as natsio
    from nats.js.api import StreamConfig
    nc = await natsio.connect(f"nats://127.0.0.1:{port}", user=SERVER[0], password=SERVER[1])
    js = nc.jetstream()
    if cmd == "nats-setup":
        subj = [f"chillcloud.v1.*.{k}" for k in ("birth", "death", "data", "cmd-result")]
        await js.add_stream(StreamConfig(name="CHILLCLOUD", subjects=subj, num_replicas=3))
        print(await js.stream_info("CHILLCLOUD"))
    elif cmd == "nats-purge":
        await js.purge_stream("CHILLCLOUD"); print("purged")
    else:
        for attempt in range(30):       # after a kill -9 the stream needs a new leader first
            try: si = await js.stream_info("CHILLCLOUD", ); break
            except Exception as e: await asyncio.sleep(1)
        else: print("RESULT stream unavailable for 30 s"); return
        try:
            m = await js.get_last_msg("CHILLCLOUD", f"chillcloud.v1.{gw}.data")
            found = m.data == payload.encode()
        except Exception as e:
            found = False
        print(f"RESULT {'found' if found else 'NOT found'} ({si.state.messages} messages in stream, leader {si.cluster.leader})")
    await nc.close()

cmd = sys.argv[1]
if cmd.startswith("rabbit"):
    rabbit(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "gw001", sys.argv[4] if len(sys.argv) > 4 else "", purge=cmd == "rabbit-purge")
else:
    asyncio.run(nats(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "", sys.argv[4] if len(sys.argv) > 4 else "", cmd))
