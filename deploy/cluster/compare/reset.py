"""Empty the stores between benchmark runs: python3 reset.py  (RabbitMQ partitions, NATS stream
and its 'bench' consumer, Mosquitto's persistent chillcloud-server session)."""
import asyncio, pika, time, paho.mqtt.client as mqtt, nats
from users import SERVER
c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 30000, credentials=pika.PlainCredentials(*SERVER))); ch = c.channel()
print("rabbit purged", [ch.queue_purge(f"chillcloud.partition.{k}").method.message_count for k in range(4)]); c.close()
async def n():
    nc = await nats.connect("nats://127.0.0.1:40000", user=SERVER[0], password=SERVER[1]); js = nc.jetstream()
    await js.purge_stream("CHILLCLOUD")
    try: await js.delete_consumer("CHILLCLOUD", "bench")
    except Exception: pass
    await nc.close(); print("nats purged")
asyncio.run(n())
m = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chillcloud-server", clean_session=True); m.username_pw_set(*SERVER)
m.connect("127.0.0.1", 18830); m.loop_start(); time.sleep(1); m.disconnect(); m.loop_stop(); print("mosquitto session cleared")
