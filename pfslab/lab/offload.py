"""Turn off TX checksum offload on lab veths (pyroute2's ethtool ioctls, no `ethtool` parsing).

Why: on a veth, TX checksum offload leaves TCP/UDP checksums unfilled (CHECKSUM_PARTIAL), so
captures show "bad checksum" and a userspace forwarder (the NFQUEUE delay line) would pass on
broken packets. Turning tx checksumming off also turns off TSO (it depends on it), so captured
frames are real wire-sized frames.

The ethtool ioctl acts on the namespace of the socket it is issued on, so one socket made
inside each lab namespace (nsutil.socket_in) reaches that namespace's interfaces.
"""
from __future__ import annotations

import socket

from pyroute2.ethtool.ioctl import IoctlEthtool

from .nsutil import socket_in

FLAGS_OFF = ("tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload",
             "generic-receive-offload")


def tx_offload_off(ifnames, netns: str | None = None) -> list[str]:
    """Turn tx checksumming off on `ifnames` in the namespace at path `netns` (None: ours).
    Returns the names changed. Interfaces without the feature are skipped."""
    sock = socket_in(netns) if netns else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    eth = IoctlEthtool()
    eth.sock.close()
    eth.sock = sock
    done = []
    try:
        for name in ifnames:
            eth.change_ifname(name)
            for flag in FLAGS_OFF:
                try:
                    if eth.get_offload_flags().get(flag):
                        eth.set_offload_flag(flag, 0)
                except OSError:
                    continue
            done.append(name)
    finally:
        eth.close()
    return done


def tx_offload_state(ifname: str, netns: str | None = None) -> bool:
    """Is tx checksumming on?"""
    sock = socket_in(netns) if netns else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    eth = IoctlEthtool()
    eth.sock.close()
    eth.sock = sock
    try:
        eth.change_ifname(ifname)
        return bool(eth.get_offload_flags().get("tx-checksumming"))
    finally:
        eth.close()
