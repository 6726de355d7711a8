#!/usr/bin/env bash
# The standard Chimney lab, shared by users and tests. Needs root (or CAP_NET_ADMIN).
#
#   scripts/lab.sh up      create what is missing (idempotent), print what exists
#   scripts/lab.sh down    remove everything this script makes (idempotent)
#   scripts/lab.sh status  print the lab without changing it
#
# Layout: one L2 segment, 10.9.0.0/24 and fd00:9::/64, on the Linux bridge chbr0:
#
#   chbr0    bridge, 10.9.0.1/24 and fd00:9::1/64 (the root namespace's addresses on the segment)
#   chtap0   persistent TAP (vnet_hdr), port of chbr0: Chimney opens it with TapLink
#   chtap1   persistent TAP (vnet_hdr), port of chbr0: a second NIC for teaming/failover
#   chveth0  port of chbr0, peer of chveth1
#   chns     network namespace holding chveth1, 10.9.0.2/24 and fd00:9::2/64: a Linux host of its
#            own on the same segment, so tests can talk to the kernel's TCP without loopback
#            shortcuts; its IPv6 default route is fd00:9::1
#
# Chimney takes the next addresses, e.g.
#   chimney serve --tap chtap0 --ip 10.9.0.10/24 --ip fd00:9::10/64 --gw 10.9.0.1 --gw6 fd00:9::1
#   ip netns exec chns curl -6 'http://[fd00:9::10]/bytes/1000000' | wc -c
#
# The namespace sits on the same segment rather than a routed 10.9.1.0/24 so that a Chimney NIC
# and the namespace reach each other at L2 (ARP, gratuitous ARP after failover) with no router.
# Nothing outside these names, 10.9.x.x and fd00:9::/64 is touched (not fd00::/64: a machine may
# already be on it, as the one these scripts were written on is). The IPv6 addresses are added
# with nodad: they are the lab's own, and a test should not wait a second for the kernel's DAD.
set -euo pipefail

BR=chbr0
BR_ADDR=10.9.0.1/24
TAPS=(chtap0 chtap1)
NS=chns
VETH=chveth0
VETH_NS=chveth1
NS_ADDR=10.9.0.2/24
BR_ADDR6=fd00:9::1/64
NS_ADDR6=fd00:9::2/64

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "lab.sh: must run as root (it creates network devices)" >&2
    exit 1
  fi
  command -v ip >/dev/null || { echo "lab.sh: needs iproute2 (ip)" >&2; exit 1; }
}

exists() { ip link show dev "$1" >/dev/null 2>&1; }
ns_exists() { ip netns list 2>/dev/null | grep -qw "^$NS"; }

up() {
  need_root
  if ! exists "$BR"; then
    ip link add name "$BR" type bridge
    echo "made bridge $BR"
  fi
  # No STP and no forwarding delay: a lab port must pass frames the moment it is up.
  ip link set dev "$BR" type bridge stp_state 0 forward_delay 0 2>/dev/null || true
  ip addr replace "$BR_ADDR" dev "$BR"
  # A bridge with IPv6 disabled by sysctl refuses the address; the IPv4 lab still works then.
  ip -6 addr replace "$BR_ADDR6" dev "$BR" nodad 2>/dev/null ||
    echo "lab.sh: could not add $BR_ADDR6 to $BR (IPv6 disabled?)" >&2
  ip link set dev "$BR" up

  for t in "${TAPS[@]}"; do
    if ! exists "$t"; then
      if ! ip tuntap add mode tap name "$t" vnet_hdr 2>/dev/null; then
        # Old iproute2 without vnet_hdr: TapLink sets IFF_VNET_HDR itself when it attaches.
        ip tuntap add mode tap name "$t"
      fi
      echo "made tap $t"
    fi
    ip link set dev "$t" master "$BR" txqueuelen 10000
    ip link set dev "$t" up
  done

  if ! ns_exists; then
    ip netns add "$NS"
    echo "made netns $NS"
  fi
  if ! exists "$VETH"; then
    ip link add "$VETH" type veth peer name "$VETH_NS" netns "$NS"
    echo "made veth $VETH <-> $NS:$VETH_NS"
  fi
  ip link set dev "$VETH" master "$BR"
  ip link set dev "$VETH" up
  ip -n "$NS" addr replace "$NS_ADDR" dev "$VETH_NS"
  ip -n "$NS" link set dev "$VETH_NS" up
  ip -n "$NS" link set dev lo up
  ip -n "$NS" route replace default via "${BR_ADDR%/*}" 2>/dev/null || true
  ip -n "$NS" -6 addr replace "$NS_ADDR6" dev "$VETH_NS" nodad 2>/dev/null ||
    echo "lab.sh: could not add $NS_ADDR6 in $NS (IPv6 disabled?)" >&2
  ip -n "$NS" -6 route replace default via "${BR_ADDR6%/*}" dev "$VETH_NS" 2>/dev/null || true
  status
}

down() {
  need_root
  if ns_exists; then
    ip netns del "$NS"
    echo "removed netns $NS (and $VETH_NS)"
  fi
  # Deleting the namespace takes the veth pair with it, but asynchronously: it may linger a moment.
  if exists "$VETH" && ip link del "$VETH" 2>/dev/null; then
    echo "removed veth $VETH"
  fi
  for t in "${TAPS[@]}"; do
    if exists "$t"; then
      ip link del "$t"
      echo "removed tap $t"
    fi
  done
  if exists "$BR"; then
    ip link del "$BR"
    echo "removed bridge $BR"
  fi
}

status() {
  echo "lab (a TAP shows NO-CARRIER/DOWN until a process, e.g. TapLink, holds it open):"
  for d in "$BR" "${TAPS[@]}" "$VETH"; do
    if exists "$d"; then
      ip -br addr show dev "$d" | sed 's/^/  /'
    else
      echo "  $d (missing)"
    fi
  done
  if ns_exists; then
    ip -n "$NS" -br addr show dev "$VETH_NS" 2>/dev/null | sed "s/^/  $NS: /" || echo "  $NS: $VETH_NS (missing)"
  else
    echo "  $NS (missing)"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
