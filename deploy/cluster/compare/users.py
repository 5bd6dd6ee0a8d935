"""Test users shared by the comparison scripts: the server user and N gateways gw001..gwNNN.
`python3 users.py rabbit-defs P N > defs.json` writes RabbitMQ definitions (users, vhost and
topic permissions, P quorum queues chillcloud.partition.<k> with per-gateway bindings);
`python3 users.py nats-users N` writes the NATS `users` list (one account, per-user subjects)."""
import base64, hashlib, json, os, sys, zlib

SERVER = ("chillcloud-server", "serverpw")
UP = ["birth", "death", "data", "cmd-result"]      # gateway -> server
DOWN = ["cmd", "boost"]                             # server -> gateway

def gw(i): return f"gw{i:03d}"
def pw(user): return user + "-pw"
def partition(gwid, p): return zlib.crc32(gwid.encode()) % p   # stable hash of the id

def rabbit_hash(password):
    # rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)), 4-byte salt
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()

def rabbit_defs(p, n):
    users, perms, tperms, bindings = [], [], [], []
    users.append({"name": SERVER[0], "password_hash": rabbit_hash(SERVER[1]),
                  "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []})
    perms.append({"user": SERVER[0], "vhost": "/", "configure": "^chillcloud\\.", "write": "^(amq\\.topic|chillcloud\\..*)$", "read": "^chillcloud\\..*$"})
    for i in range(1, n + 1):
        g = gw(i)
        users.append({"name": g, "password_hash": rabbit_hash(pw(g)),
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []})
        # The MQTT plugin declares/binds its own mqtt-subscription-<clientid>qos{0,1} queues.
        perms.append({"user": g, "vhost": "/", "configure": "^mqtt-subscription-.*$",
                      "write": "^(amq\\.topic|mqtt-subscription-.*)$", "read": "^(amq\\.topic|mqtt-subscription-.*)$"})
        tperms.append({"user": g, "vhost": "/", "exchange": "amq.topic",
                       "write": "^chillcloud\\.v1\\.%s\\.(birth|death|data|cmd-result)$" % g,
                       "read": "^chillcloud\\.v1\\.%s\\.(cmd|boost)$" % g})
        for kind in UP:
            bindings.append({"source": "amq.topic", "vhost": "/", "destination": f"chillcloud.partition.{partition(g, p)}",
                             "destination_type": "queue", "routing_key": f"chillcloud.v1.{g}.{kind}", "arguments": {}})
    queues = [{"name": f"chillcloud.partition.{k}", "vhost": "/", "durable": True, "auto_delete": False,
               "arguments": {"x-queue-type": "quorum", "x-single-active-consumer": True}} for k in range(p)]
    return {"users": users, "vhosts": [{"name": "/"}], "permissions": perms, "topic_permissions": tperms,
            "queues": queues, "exchanges": [], "bindings": bindings}

def nats_users(n):
    out = ['{user: "%s", password: "%s"}' % SERVER]
    for i in range(1, n + 1):
        g = gw(i)
        pub = ", ".join(f'"chillcloud.v1.{g}.{k}"' for k in UP)
        # QoS 1 MQTT subscriptions are JetStream consumers delivering on $MQTT.sub.<random>:
        # without this permission every QoS 1 SUBSCRIBE gets SUBACK 0x80 (NATS 2.9).
        sub = ", ".join([f'"chillcloud.v1.{g}.{k}"' for k in DOWN] + ['"$MQTT.sub.>"'])
        out.append('{user: "%s", password: "%s", permissions: {publish: {allow: [%s]}, subscribe: {allow: [%s]}}}' % (g, pw(g), pub, sub))
    return "[\n  " + ",\n  ".join(out) + "\n]"

if __name__ == "__main__":
    if sys.argv[1] == "rabbit-defs":
        print(json.dumps(rabbit_defs(int(sys.argv[2]), int(sys.argv[3])), indent=1))
    else:
        print(nats_users(int(sys.argv[2])))
