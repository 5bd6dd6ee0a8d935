"""Will on an abnormal client exit (socket closed without DISCONNECT), node stays up.
  python3 will.py MQTT_PORT OBS_USER OBS_PASS"""
import os, subprocess, sys, time, uuid, paho.mqtt.client as mqtt
port, ou, op = int(sys.argv[1]), sys.argv[2], sys.argv[3]; tag = uuid.uuid4().hex[:6]
got = []
o = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"obs-will-{tag}"); o.username_pw_set(ou, op)
o.on_message = lambda c, u, m: got.append(m.payload); o.on_connect = lambda c, u, f, rc, p: c.subscribe("chillcloud/v1/gw004/death", 1)
o.connect("127.0.0.1", port); o.loop_start(); time.sleep(1)
child = f"""
import os, time, paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw004-{tag}"); c.username_pw_set("gw004", "gw004-pw")
c.will_set("chillcloud/v1/gw004/death", "dead-{tag}", 1); c.connect("127.0.0.1", {port}); c.loop_start(); time.sleep(1); os._exit(0)"""
subprocess.run([sys.executable, "-c", child]); t = time.time()
while not got and time.time() - t < 10: time.sleep(0.05)
print(f"RESULT will on client crash (port {port}): {got} after {time.time() - t:.2f} s"); o.loop_stop()
