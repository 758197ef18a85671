"""pfslab: a packet-level lab of Cisco IP phones' Peer Firmware Sharing (CPPDP, port 4051)."""
__version__ = "0.1.0"
