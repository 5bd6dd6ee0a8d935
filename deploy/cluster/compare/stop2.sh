#!/bin/bash
# stop2.sh BASE_DIR SIG I J : send SIG to nodes I and J (pids in BASE_DIR/nI.pid), wait until gone
b=$1 sig=$2; shift 2
for i in "$@"; do kill -$sig "$(cat "$b/n$i.pid")"; done
for i in "$@"; do while kill -0 "$(cat "$b/n$i.pid")" 2>/dev/null; do sleep 0.05; done; done
echo "nodes $* of $b stopped ($sig)"
