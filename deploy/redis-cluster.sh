#!/bin/sh
# Joins the compose project's redis-node replicas into a 3-master Redis Cluster (16384 slots
# spread over them), or finds them already joined; exits 0 once the cluster state is ok.
set -eu
nodes=$(getent ahostsv4 redis-node | awk '{print $1}' | sort -u)
count=$(echo "$nodes" | grep -c .)
if [ "$count" -lt 3 ]; then
  echo "redis-cluster: $count of 3 nodes resolve yet" >&2
  exit 1  # restart: on-failure tries again
fi
first=$(echo "$nodes" | head -n 1)
if redis-cli -h "$first" cluster info | grep -q "cluster_state:ok"; then
  echo "redis-cluster: already joined"
  exit 0
fi
# shellcheck disable=SC2086  # one argument per node
redis-cli --cluster create $(for ip in $nodes; do printf '%s:6379 ' "$ip"; done) --cluster-yes
for _ in $(seq 1 30); do
  if redis-cli -h "$first" cluster info | grep -q "cluster_state:ok"; then
    echo "redis-cluster: state ok"
    exit 0
  fi
  sleep 1
done
echo "redis-cluster: the cluster did not reach state ok" >&2
exit 1
