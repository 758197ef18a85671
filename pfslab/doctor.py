"""`pfslab doctor`: does this machine have what the lab needs? Each check prints one line:
ok, MISSING (what is missing and how to fix it) or absent (optional, with what pfslab
uses instead).

Kernel features are looked up without changing anything: a loaded module (/sys/module), the
kernel's build configuration (/proc/config.gz or /boot/config-<release>), or a module the
kernel can load (/lib/modules/<release>/modules.*). Tools are looked up on PATH, as Mininet
runs them by name. Cores and memory are checked against the size asked for (``--phones``).
Exit code: 0 when everything required is there, 1 when something is missing.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import math
import os
import platform
import shutil

from .errors import UserError

#: (what, CONFIG_ option, module name, required, why)
KERNEL = (
    ("network namespaces", "CONFIG_NET_NS", None, True, "every lab host is a namespace"),
    ("veth", "CONFIG_VETH", "veth", True, "the links between lab hosts"),
    ("bridge", "CONFIG_BRIDGE", "bridge", True, "each subnet is a Linux bridge"),
    ("ifb", "CONFIG_IFB", "ifb", True, "the subnet captures mirror into ifb devices"),
    ("tc htb", "CONFIG_NET_SCH_HTB", "sch_htb", True, "the WAN's bandwidth"),
    ("tc ingress", "CONFIG_NET_SCH_INGRESS", "sch_ingress", True, "capture mirrors"),
    ("tc u32", "CONFIG_NET_CLS_U32", "cls_u32", True, "capture mirrors"),
    ("tc mirred", "CONFIG_NET_ACT_MIRRED", "act_mirred", True, "capture mirrors"),
    ("NFQUEUE", "CONFIG_NETFILTER_XT_TARGET_NFQUEUE", "xt_NFQUEUE", True,
     "the WAN's delay line when the kernel has no netem"),
    ("nfnetlink_queue", "CONFIG_NETFILTER_NETLINK_QUEUE", "nfnetlink_queue", True,
     "the WAN's delay line when the kernel has no netem"),
    ("tc netem", "CONFIG_NET_SCH_NETEM", "sch_netem", False,
     "optional: the WAN's delay and loss in the kernel (else the NFQUEUE delay line)"),
)

#: tool on PATH -> Debian package (the Makefile's APT_PKGS installs them all)
TOOLS = {
    "mnexec": "mininet", "ip": "iproute2", "tc": "iproute2", "brctl": "bridge-utils",
    "tcpdump": "tcpdump", "tshark": "tshark", "in.tftpd": "tftpd-hpa",
    "iptables": "iptables", "nsenter": "util-linux", "unshare": "util-linux",
    "mount": "mount", "ethtool": "ethtool", "ping": "iputils-ping", "tftp": "tftp-hpa",
}
#: Python module -> how to get it
MODULES = {
    "mininet": "Debian's mininet, in a venv built on /usr/bin/python3 with "
               "--system-site-packages (sudo make deps)",
    "pyroute2": "pip install -e '.[test]' in the venv (sudo make deps)",
    "netfilterqueue": "pip install netfilterqueue after apt-get install libnetfilter-queue-dev "
                      "(sudo make deps)",
    "scapy": "pip install -e '.[test]' in the venv (sudo make deps)",
}
#: the agent measured about 0.5 MB per phone in all (docs/testing.md); twice that, plus a base
MIB_PER_PHONE = 1.0
BASE_MIB = 512
MIN_CORES = 2
#: phones per core beyond which one agent process falls behind real time (docs/testing.md)
PHONES_PER_CORE = 50


STATUS = {True: "ok     ", False: "MISSING", None: "absent "}   # None: optional


def kernel_config() -> dict[str, str]:
    """CONFIG_X -> y/m from /proc/config.gz or /boot/config-<release> (empty if neither)."""
    rel = platform.release()
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{rel}", open)):
        try:
            with opener(path, "rt") as f:
                return dict(line.strip().split("=", 1) for line in f
                            if line.startswith("CONFIG_") and "=" in line)
        except OSError:
            continue
    return {}


def loadable_modules() -> set[str]:
    """Module names the running kernel can load or has built in (from /lib/modules)."""
    names = set()
    base = f"/lib/modules/{platform.release()}"
    for fn in ("modules.dep", "modules.builtin"):
        try:
            with open(os.path.join(base, fn)) as f:
                for line in f:
                    path = line.split(":", 1)[0].strip()
                    names.add(os.path.basename(path).split(".ko")[0].replace("-", "_"))
        except OSError:
            continue
    return names


def check_kernel(config: dict, modules: set[str]) -> list[tuple[str, bool, str]]:
    out = []
    for what, opt, mod, required, why in KERNEL:
        if mod and os.path.isdir(f"/sys/module/{mod}"):
            ok, how = True, "loaded"
        elif config.get(opt) in ("y", "m"):
            ok, how = True, f"{opt}={config[opt]}"
        elif mod and mod in modules:
            ok, how = True, "module available"
        elif opt == "CONFIG_NET_NS" and os.path.exists("/proc/self/ns/net"):
            ok, how = True, "/proc/self/ns/net"
        else:
            ok = False
            fix = (f"not in this kernel ({platform.release()}): use a kernel built with {opt} "
                   f"(Debian 12's linux-image-amd64 has it)")
            how = fix if not mod else f"{fix}, or `modprobe {mod}` if it is a module"
        out.append((f"kernel: {what}", True if ok else (None if not required else False),
                    f"{how} ({why})"))
    return out


def check_tools() -> list[tuple[str, bool, str]]:
    out = []
    for tool, pkg in TOOLS.items():
        path = shutil.which(tool)
        if path:
            out.append((f"tool: {tool}", True, path))
            continue
        elsewhere = next((d for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
                          if os.access(os.path.join(d, tool), os.X_OK)), None)
        fix = (f"missing from PATH (it is in {elsewhere}: add {elsewhere} to PATH, or run "
               "as root with sudo)" if elsewhere else
               f"missing: sudo apt-get install {pkg} (or sudo make deps)")
        out.append((f"tool: {tool}", False, fix))
    return out


def check_python() -> list[tuple[str, bool, str]]:
    return [(f"python: {m}", importlib.util.find_spec(m) is not None,
             "importable" if importlib.util.find_spec(m) is not None else f"missing: {fix}")
            for m, fix in MODULES.items()]


def mem_available_mib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_size(phones: int) -> list[tuple[str, bool, str]]:
    cores = os.cpu_count() or 1
    want_cores = max(MIN_CORES, math.ceil(phones / PHONES_PER_CORE))
    want_mib = BASE_MIB + MIB_PER_PHONE * phones
    mem = mem_available_mib()
    out = [("cores", cores >= want_cores,
            f"{cores} (want {want_cores} for {phones} phones in the lab)" if cores >= want_cores
            else f"{cores}, want {want_cores} for {phones} phones: give the VM more cores, "
                 f"run fewer phones per lab, or run the site in `pfslab sim`")]
    if mem is None:
        out.append(("memory", False, "cannot read /proc/meminfo"))
    else:
        out.append(("memory", mem >= want_mib,
                    f"{mem:,.0f} MiB available (want {want_mib:,.0f} MiB for {phones} phones)"
                    if mem >= want_mib else
                    f"{mem:,.0f} MiB available, want {want_mib:,.0f} MiB for {phones} phones: "
                    "give the VM more memory or run fewer phones"))
    return out


def checks(phones: int) -> list[tuple[str, bool, str]]:
    root = os.geteuid() == 0
    return [("root", root, "yes" if root else "no: the lab needs root (sudo .venv/bin/pfslab "
                                              "...; sudo make test)"),
            *check_kernel(kernel_config(), loadable_modules()), *check_tools(),
            *check_python(), *check_size(phones)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--phones", type=int, default=16, metavar="N",
                   help="the lab size to check cores and memory for (default: 16, "
                        "`sudo make lab`'s 2 x 8)")


def run(args) -> int:
    if args.phones < 1:
        raise UserError("--phones must be at least 1")
    results = checks(args.phones)
    for name, ok, detail in results:
        print(f"{STATUS[ok]}  {name}: {detail}")
    bad = [name for name, ok, _ in results if ok is False]
    print(f"pfslab doctor: {len(bad)} missing ({', '.join(bad)})" if bad else
          "pfslab doctor: this machine has what the lab needs")
    return 1 if bad else 0
