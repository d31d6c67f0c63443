#!/bin/sh
# CAF 0.17 derives its node id from the MAC addresses, the root entry of
# /etc/fstab and the PID. Containers on one host network can share all three
# (PID 1 everywhere), and two nodes with one id silently swap messages. A
# fresh UUID as the root entry makes every container's id unique.
set -e
if [ -w /etc/fstab ] || [ ! -e /etc/fstab ]; then
  uuid=$(cat /proc/sys/kernel/random/uuid)
  echo "UUID=$uuid / ext4 defaults 0 1" > /etc/fstab
fi
exec "$@"
