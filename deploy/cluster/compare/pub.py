"""Publish ONE QoS 1 message as a gateway and report whether/when the PUBACK arrived.
  python3 pub.py PORT GW KIND PAYLOAD [--timeout S] [--kill PID] [--retain]
--before CMD: run CMD between CONNACK and PUBLISH.
--kill PID: kill -9 PID the instant the PUBACK is received (on the network thread)."""
import argparse, os, signal, sys, time
import paho.mqtt.client as mqtt
from users import pw

a = argparse.ArgumentParser()
a.add_argument("port", type=int); a.add_argument("gw"); a.add_argument("kind"); a.add_argument("payload")
a.add_argument("--timeout", type=float, default=15); a.add_argument("--kill", type=int); a.add_argument("--retain", action="store_true")
a.add_argument("--user")
a.add_argument("--before", help="shell command run after CONNACK, before PUBLISH (e.g. stop nodes)")
args = a.parse_args()

def on_publish(c, userdata, mid, rc, props):
    if args.kill: os.kill(args.kill, signal.SIGKILL)     # right after PUBACK
    userdata["acked"] = time.monotonic()

state = {}
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{args.gw}-pub", protocol=mqtt.MQTTv311, userdata=state)
c.username_pw_set(args.user or args.gw, pw(args.user or args.gw))
c.on_publish = on_publish
c.connect("127.0.0.1", args.port, keepalive=30)
c.loop_start()
t0 = time.monotonic()
while not c.is_connected() and time.monotonic() - t0 < 10: time.sleep(0.01)
if not c.is_connected(): print("RESULT connect-failed"); sys.exit(2)
if args.before:
    import subprocess; subprocess.run(args.before, shell=True, check=True)
    print(f"connected={c.is_connected()} after --before")
t0 = time.monotonic()
c.publish(f"chillcloud/v1/{args.gw}/{args.kind}", args.payload.encode(), qos=1, retain=args.retain)
while "acked" not in state and time.monotonic() - t0 < args.timeout and c.is_connected(): time.sleep(0.005)
if "acked" in state: print(f"RESULT puback after {1000*(state['acked']-t0):.0f} ms")
else: print(f"RESULT no-puback within {args.timeout}s (connected={c.is_connected()})")
c.loop_stop()
try: c.disconnect()
except Exception: pass
