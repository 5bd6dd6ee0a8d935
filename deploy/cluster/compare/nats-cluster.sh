#!/bin/bash
# 3-node nats-server (2.9.x) cluster with JetStream and MQTT on loopback, for the comparison.
#   nats-cluster.sh start BASE_DIR BASE_PORT [NGW]  client B+I-1, mqtt B+10+I-1, route B+20+I-1,
#                                                   monitor B+30+I-1; NGW gateway users (users.py)
#   nats-cluster.sh start-node BASE_DIR I           (re)start node I, wait until healthy
#   nats-cluster.sh reload BASE_DIR [NGW]           regenerate users/configs, SIGHUP
#   nats-cluster.sh stop BASE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); DEADLINE=${DEADLINE:-120}
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
conf() {  # conf I : one config file per node
    local i=$1
    cat >"$base/n$i.conf" <<EOC
server_name: n$i
listen: 127.0.0.1:$((BP + i - 1))
http: 127.0.0.1:$((BP + 30 + i - 1))
jetstream { store_dir: "$base/n$i", max_memory_store: 256MB, max_file_store: 4GB }
cluster {
  name: chillcloud
  listen: 127.0.0.1:$((BP + 20 + i - 1))
  routes: [ nats-route://127.0.0.1:$((BP + 20)), nats-route://127.0.0.1:$((BP + 21)), nats-route://127.0.0.1:$((BP + 22)) ]
}
mqtt { listen: 127.0.0.1:$((BP + 10 + i - 1)) }
accounts { CC: { jetstream: enabled, users: $(cat "$base/users.conf") } }
EOC
}
start_node() { setsid nats-server -c "$base/n$1.conf" </dev/null >"$base/n$1.out" 2>&1 & echo $! >"$base/n$1.pid"; }
wait_healthy() {  # until node I's /healthz says ok (JetStream up, meta leader known)
    local t=$(( $(date +%s) + DEADLINE ))
    # /healthz can stay "unavailable" for good after kill -9 cycles (an $MQTT_rmsgs consumer
    # replica never becomes current, 2.9.10), so also accept: JetStream meta leader known + MQTT up.
    local m="http://127.0.0.1:$((BP + 30 + $1 - 1))"
    until curl -sf "$m/healthz" >/dev/null || { curl -sf "$m/jsz" | grep -q '"leader"' &&
          (exec 3<>/dev/tcp/127.0.0.1/$((BP + 10 + $1 - 1))) 2>/dev/null; }; do
        [ "$(date +%s)" -lt $t ] || { echo "timeout node $1" >&2; exit 1; }; sleep 0.1
    done
}
cmd=$1; base=$(mkdir -p "$2" && cd "$2" && pwd)
case $cmd in
start)
    BP=$3; echo "BP=$BP" >"$base/cluster.env"
    python3 "$here/users.py" nats-users "${4:-60}" >"$base/users.conf"
    t0=$(now)
    for i in 1 2 3; do conf $i; start_node $i; done
    for i in 1 2 3; do wait_healthy $i; done
    echo "3 nodes healthy after $(elapsed "$t0") s" >&2 ;;
start-node)
    . "$base/cluster.env"; i=$3; t0=$(now); start_node "$i"; wait_healthy "$i"
    echo "node $i healthy after $(elapsed "$t0") s" >&2 ;;
reload)   # regenerate users (users.py) and configs, SIGHUP every node
    . "$base/cluster.env"; python3 "$here/users.py" nats-users "${3:-60}" >"$base/users.conf"
    for i in 1 2 3; do conf $i; kill -HUP "$(cat "$base/n$i.pid")"; done ;;
stop)
    for i in 1 2 3; do [ -f "$base/n$i.pid" ] && kill -TERM "$(cat "$base/n$i.pid")" 2>/dev/null || true; done
    for i in 1 2 3; do p=$(cat "$base/n$i.pid" 2>/dev/null || echo); [ -n "$p" ] || continue
        while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; rm -f "$base/n$i.pid"; done ;;
esac
