#!/bin/bash
# killtest.sh rabbit|nats ITER : publish QoS 1 via the node that leads the store (quorum queue
# chillcloud.partition.0 for gw001 / stream CHILLCLOUD), kill -9 that node the instant the PUBACK
# arrives, then check from a surviving node that the message is stored; restart the node.
set -u; cd "$(dirname "$0")"; eng=$1
for it in $(seq 1 "$2"); do
  if [ $eng = rabbit ]; then
    B=/tmp/rmqc; BP=30000
    L=$(../rabbitmq-cluster.sh ctl $B 1 list_queues name leader 2>/dev/null | awk '$1=="chillcloud.partition.0"{print $2}' | sed 's/rabbit-\([0-9]\)@.*/\1/')
  else
    B=/tmp/natsc; BP=40000
    L=$(curl -s "http://127.0.0.1:40030/jsz?streams=true&accounts=true" | python3 -c 'import json,sys; d=json.load(sys.stdin); print([s for a in d["account_details"] for s in a["stream_detail"] if s["name"]=="CHILLCLOUD"][0]["cluster"]["leader"][1:])')
  fi
  O=$(( L % 3 + 1 )); P="kill-$eng-$it-$RANDOM"
  echo "iter $it: leader=n$L; client on n$L; survivor n$O"
  python3 pub.py $((BP + 10 + L - 1)) gw001 data "$P" --kill "$(cat $B/n$L.pid)" --timeout 10
  while kill -0 "$(cat $B/n$L.pid)" 2>/dev/null; do sleep 0.05; done
  python3 check.py $eng $((BP + O - 1)) gw001 "$P"
  if [ $eng = rabbit ]; then ../rabbitmq-cluster.sh start-node $B $L; else ./nats-cluster.sh start-node $B $L; fi
done
