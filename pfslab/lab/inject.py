"""Carries out a run's network faults (pfslab.lab.faults) on the real lab, timed from the
phones' reset: in.tftpd stopped and started, an iptables DROP on the WAN, a subnet's router
link set down, a real extra host (a light host, like the phones) running the rogue attacker (pfslab.lab.rogue).

A phone's own faults (parent, root-*, power-cycle) are the agent's (its spec's faults[]);
wan-loss is a setting (Settings.wan()). ``Injector.tick(t)`` runs from the lab's main
thread (processes it starts die with that thread: nsutil.die_with_parent), and
``close()`` undoes whatever is still on. ``events``: what was done, when (results.json
"faults").
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

from pyroute2 import IPRoute

from pfslab import firmware
from pfslab.errors import UserError
from pfslab.protocol.codec import load_map

from .faults import Fault
from .lighthost import LightHost
from .nsutil import die_with_parent, ns_argv

ROGUE_HOST_NUMBER = 250        # the i-th rogue's address: host .(250 - i) of its subnet


class Injector:
    def __init__(self, net, faults: list[Fault], log=lambda m: None):
        self.net, self.log = net, log
        self.faults = [f for f in faults if not f.by_agent and f.kind != "wan-loss"]
        self.actions: list[tuple[float, str, Fault, object]] = []
        self.undo: dict[int, object] = {}          # id -> how to undo what is still on
        self.events: list[dict] = []
        self.rogues: list[subprocess.Popen] = []
        for i, f in enumerate(self.faults):
            start, stop = getattr(self, "_" + f.kind.replace("-", "_"))(f, i)
            self.actions.append((f.at, "start", f, start))
            if stop is not None:
                self.actions.append((f.end, "stop", f, stop))
        self.actions.sort(key=lambda a: a[0])

    def tick(self, t: float) -> None:
        """Run every action due by ``t`` seconds after the reset."""
        while self.actions and self.actions[0][0] <= t:
            at, what, f, fn = self.actions.pop(0)
            try:
                detail = fn()
            except (OSError, subprocess.SubprocessError, UserError) as e:
                detail = f"failed: {e}"
            self.events.append({"fault": f.spec(), "kind": f.kind, "what": what,
                                "t": round(t, 3), "detail": detail})
            self.log(f"fault {f.spec()}: {what} at {t:.1f}s ({detail})")

    def close(self) -> None:
        """Undo what is still on (a fault that outlived the run), stop the rogues."""
        for fn in list(self.undo.values()):
            try:
                fn()
            except (OSError, subprocess.SubprocessError, UserError):
                pass
        self.undo.clear()
        for p in self.rogues:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    # ------------------------------------------------------------ kinds
    def _tftp_restart(self, f: Fault, i: int):
        tftp = self.net.tftp

        def stop():
            tftp.stop()
            self.undo[i] = start
            return "in.tftpd stopped"

        def start():
            self.undo.pop(i, None)
            tftp.start()
            return "in.tftpd started"
        return stop, start

    def _wan_outage(self, f: Fault, i: int):
        rb = self.net.mn.get(self.net.info["branch_router"])
        intf = self.net.info["branch_wan_intf"]
        rules = [["-i", intf, "-j", "DROP"], ["-o", intf, "-j", "DROP"]]

        def iptables(op: str, rule: list[str]) -> None:
            r = subprocess.run(ns_argv(rb.pid, ["iptables", "-w", op, "FORWARD", *rule]),
                               capture_output=True, timeout=20)
            if r.returncode:
                raise UserError(f"iptables {op} FORWARD {' '.join(rule)} in the branch router "
                                f"failed: {r.stderr.decode(errors='replace').strip()}")

        def down():
            for rule in rules:
                iptables("-I", rule)
            self.undo[i] = up
            return f"WAN {intf} drops everything"

        def up():
            self.undo.pop(i, None)
            for rule in rules:
                iptables("-D", rule)
            return f"WAN {intf} forwards again"
        return down, up

    def _link_flap(self, f: Fault, i: int):
        sw = self.net.mn.get(self.net.info["subnets"][f.subnet - 1]["switch"])
        rb = self.net.mn.get(self.net.info["branch_router"])
        port = sw.connectionsTo(rb)[0][0].name       # the bridge's port to the router

        def state(s: str) -> None:
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=port)[0], state=s)

        def down():
            state("down")
            self.undo[i] = up
            return f"{port} down"

        def up():
            self.undo.pop(i, None)
            state("up")
            return f"{port} up"
        return down, up

    def _rogue(self, f: Fault, i: int):
        return (lambda: self._start_rogue(f, i)), None

    def _start_rogue(self, f: Fault, i: int) -> str:
        """A real extra host on the subnet's bridge, running the attacker."""
        net = self.net
        sub = net.info["subnets"][f.subnet - 1]
        network = ipaddress.ip_network(sub["network"])
        ip = str(network.network_address + ROGUE_HOST_NUMBER - i)
        name = f"{net.prefix}X{f.subnet}{i}"
        netns = net.add_light_host(LightHost(
            name, f"{name}-0", f"{name}-s", sub["switch"], f"{ip}/{network.prefixlen}",
            "02:50:46:%02x:ee:%02x" % (f.subnet, i), sub["gateway"]))
        files_path = os.path.join(net.out_dir, f"rogue-{i}-files.json")
        with open(files_path, "w") as fh:
            json.dump(site_files(net.site), fh)
        argv = [sys.executable, "-m", "pfslab.lab.rogue", f.how, "--broadcast",
                sub["broadcast"], "--server", net.hq_ip, "--files", files_path, "--ip", ip]
        if f.how == "replay":
            argv += ["--pcap", os.path.abspath(f.pcap)]
        env = dict(os.environ)
        env["PYTHONPATH"] = _repo_root() + (":" + env["PYTHONPATH"]
                                            if env.get("PYTHONPATH") else "")
        out = open(os.path.join(net.out_dir, f"rogue-{i}.out"), "wb")
        proc = subprocess.Popen(ns_argv(netns, argv), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                preexec_fn=die_with_parent())
        out.close()
        self.rogues.append(proc)
        net.track(proc, f"rogue {f.how}", group=True)
        return f"rogue host {name} ({ip}) runs {f.how}"


def site_files(site) -> list[dict]:
    """{model, file, map, size} of every file the site's phones upgrade (what an attacker
    who watched one upgrade knows)."""
    out = []
    for model in site.models():
        load = firmware.model_load(model)
        ls, data = firmware.build_load(load, site.firmware_scale)
        for name in ls.files():
            out.append({"model": model, "file": name, "map": load_map(load),
                        "size": len(data[name])})
    return out


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

