#!/usr/bin/env bash
# Debian packages the lab tests and the demo need: iproute2 (namespaces, tc), openssh
# (each lab device's sshd and the client), ufw (a lab device's own host firewall, which the
# deploy test turns on; installed disabled, it leaves this machine's firewall alone). Installs only what is missing, and only as root;
# without root it says what is missing and leaves the lab tests to report it.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/ufw ] || need+=(ufw)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (sudo apt-get install ${need[*]})" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
